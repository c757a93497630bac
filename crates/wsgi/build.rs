//! Record which interpreter this crate is built against, so the embedded CPython
//! starts with that interpreter's prefix and stdlib whatever PATH says at run time.
fn main() {
    let config = pyo3_build_config::get();
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=FERRICORN_BUILD_PYTHON={exe}");
    }
    println!(
        "cargo:rustc-env=FERRICORN_PYTHON_VERSION={}.{}",
        config.version().major,
        config.version().minor
    );
    // Unit tests of this crate run Python too: give them the same RUNPATH as the binary.
    pyo3_build_config::add_libpython_rpath_link_args();
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
