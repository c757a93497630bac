//! Give the `ferricorn` binary what its embedded CPython needs at run time, as
//! crates/wsgi/build.rs (which owns every fact about the build interpreter) says
//! through its `links` metadata: with a static libpython, the C API exported to
//! extension modules (and, if asked, a fixed-address link); with a shared one, a
//! RUNPATH to it.
fn main() {
    let python =
        |key: &str| std::env::var(format!("DEP_FERRICORN_PYTHON_{key}")).unwrap_or_default();
    let link_arg = python("BIN_LINK_ARG");
    if !link_arg.is_empty() {
        println!("cargo:rustc-link-arg-bins={link_arg}");
    }
    // With libpython inside, a position-independent executable has the loader relocate
    // libpython's 1.1 MiB of pointer-holding data at every start: pages then private to
    // the master, which runs no Python, and copied again by every worker. FERRICORN_PIE=0
    // links at a fixed address instead (as Debian links its own python3): those pages
    // stay clean, shared file pages until a worker writes one. Not the default, because
    // the executable's image, libpython included, would then lie at a known address for
    // anyone who finds a memory-safety bug in a C extension.
    println!("cargo:rerun-if-env-changed=FERRICORN_PIE");
    let fixed_address = python("LINK") == "static" && !pie_wanted();
    if fixed_address {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    let image = if fixed_address { "fixed" } else { "pie" };
    println!("cargo:rustc-env=FERRICORN_EXECUTABLE={image}");
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

/// FERRICORN_PIE: `0` links an executable with static libpython at a fixed
/// address; `1` or unset keeps it position-independent; anything else is a build
/// error.
fn pie_wanted() -> bool {
    match std::env::var("FERRICORN_PIE").unwrap_or_default().as_str() {
        "" | "1" => true,
        "0" => false,
        other => panic!("FERRICORN_PIE must be `0` or `1`, not `{other}`"),
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
