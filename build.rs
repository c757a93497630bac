//! Give the `ferricorn` binary a RUNPATH to the libpython it was built against.
//! Without it the loader may pick another libpython of the same soname (Debian's
//! /usr/lib one), with another stdlib, and nothing warns.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    if let Some(exe) = config.executable() {
        // Integration tests read this to make venvs of the same interpreter.
        println!("cargo:rustc-env=FERRICORN_BUILD_PYTHON={exe}");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
