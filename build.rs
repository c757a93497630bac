//! Give the `ferricorn` binary what its embedded CPython needs at run time: with a
//! static libpython (see crates/wsgi/build.rs), the C API exported to extension
//! modules; with a shared one, a RUNPATH to the libpython it was built against
//! (without it the loader may pick another libpython of the same soname, Debian's
//! /usr/lib one, with another stdlib, and nothing warns).
fn main() {
    let link = std::env::var("DEP_FERRICORN_PYTHON_LINK").unwrap_or_default();
    if link == "static" {
        // Every symbol of libpython's API starts with `Py` or `_Py`.
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=Py*,--export-dynamic-symbol=_Py*"
        );
    } else {
        pyo3_build_config::add_libpython_rpath_link_args();
    }
    // Integration tests read these: the interpreter to make venvs of, and how it is linked.
    println!("cargo:rustc-env=FERRICORN_LIBPYTHON={link}");
    let config = pyo3_build_config::get();
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=FERRICORN_BUILD_PYTHON={exe}");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
