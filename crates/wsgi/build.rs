//! This crate's own test binaries start a CPython of their own (nothing else here
//! links libpython: ferricorn is an extension module, loaded by the interpreter it
//! runs on). Give them a RUNPATH to the build interpreter's libpython, or the loader
//! may pick another of the same soname (Debian's /usr/lib one) and nothing warns.
//! pyo3's helper emits nothing when building an extension module.
fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=PYO3_BUILD_EXTENSION_MODULE");
    pyo3_build_config::add_libpython_rpath_link_args();
}
