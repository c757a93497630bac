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
    // Relative relocations packed (DT_RELR) instead of 24-byte RELA records: a static
    // libpython brings some 38,000 of them, 0.9 MB that the loader reads at start and
    // the master keeps resident ever after. glibc applies DT_RELR from 2.36 on.
    if glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // Integration tests read these: the interpreter to make venvs of, and how it is linked.
    println!("cargo:rustc-env=FERRICORN_LIBPYTHON={link}");
    let config = pyo3_build_config::get();
    if let Some(exe) = config.executable() {
        println!("cargo:rustc-env=FERRICORN_BUILD_PYTHON={exe}");
    }
    println!(
        "cargo:rustc-env=FERRICORN_PYTHON_VERSION={}.{}",
        config.version().major,
        config.version().minor
    );
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}

/// Whether this machine's glibc (the one the binary links against) is at least
/// MAJOR.MINOR, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .trim()
        .trim_start_matches("glibc ")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
