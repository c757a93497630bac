//! Give the `ferricorn` binary what its embedded CPython needs at run time, as
//! crates/wsgi/build.rs (which owns every fact about the build interpreter) says
//! through its `links` metadata: with a static libpython, the C API exported to
//! extension modules; with a shared one, a RUNPATH to it.
fn main() {
    let python =
        |key: &str| std::env::var(format!("DEP_FERRICORN_PYTHON_{key}")).unwrap_or_default();
    let link_arg = python("BIN_LINK_ARG");
    if !link_arg.is_empty() {
        println!("cargo:rustc-link-arg-bins={link_arg}");
    }
    // Relative relocations packed (DT_RELR) instead of 24-byte RELA records: a static
    // libpython brings some 38,000 of them, 0.9 MB that the loader reads at start and
    // the master keeps resident ever after. glibc applies DT_RELR from 2.36 on.
    if glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // For `--version`, and for the integration tests: the interpreter to make venvs
    // of, and how it is linked.
    for (key, var) in [
        ("LINK", "FERRICORN_LIBPYTHON"),
        ("BUILD_PYTHON", "FERRICORN_BUILD_PYTHON"),
        ("PYTHON_VERSION", "FERRICORN_PYTHON_VERSION"),
    ] {
        println!("cargo:rustc-env={var}={}", python(key));
    }
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
