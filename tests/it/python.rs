//! The embedded interpreter is the one ferricorn was built against, or the active
//! virtualenv's — whatever PATH says.

use std::process::Command;

use crate::util::http;
use crate::util::scratch;
use crate::util::ServerBuilder;

const BUILD_PYTHON: &str = env!("FERRICORN_BUILD_PYTHON");

/// `sys.version` (short) and `sys.prefix` of the build interpreter, asked directly.
fn build_python_facts() -> (String, String) {
    let out = Command::new(BUILD_PYTHON)
        .args([
            "-c",
            "import sys; print(sys.version.split()[0]); print(sys.prefix)",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
    )
}

#[test]
fn runs_the_build_interpreter_from_a_bare_environment() {
    // No pyenv shims, no VIRTUAL_ENV: `env -i PATH=/usr/bin:/bin ferricorn ...`.
    // Without an explicit program name CPython would find /usr/bin/python3 here
    // and mix another stdlib into ours.
    let (version, prefix) = build_python_facts();
    let extra = scratch("pythonpath");
    std::fs::write(
        extra.join("from_pythonpath.py"),
        "MESSAGE = 'PYTHONPATH works'\n",
    )
    .unwrap();
    let server = ServerBuilder::new("basic:app")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PYTHONPATH", extra.to_str().unwrap())
        .start();
    let info = http::get(server.addr(), "/python").unwrap().text();
    assert!(
        info.contains(&format!("\"version\": \"{version}\"")),
        "{info}"
    );
    assert!(
        info.contains(&format!("\"prefix\": \"{prefix}\"")),
        "{info}"
    );
    assert!(
        !info.contains("/usr/lib/python3"),
        "no foreign stdlib on sys.path: {info}"
    );
    assert_eq!(
        http::get(server.addr(), "/import?from_pythonpath")
            .unwrap()
            .text(),
        "PYTHONPATH works"
    );
}

#[test]
fn imports_packages_of_the_active_virtualenv() {
    let venv = scratch("venv");
    let status = Command::new(BUILD_PYTHON)
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(status.success());
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    std::fs::write(
        site.join("ferricorn_venv_probe.py"),
        "MESSAGE = 'only in the venv'\n",
    )
    .unwrap();

    let path = format!("{}:/usr/bin:/bin", venv.join("bin").display());
    let server = ServerBuilder::new("basic:app")
        .env_clear()
        .env("PATH", &path)
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .start();
    assert_eq!(
        http::get(server.addr(), "/import?ferricorn_venv_probe")
            .unwrap()
            .text(),
        "only in the venv"
    );
    let info = http::get(server.addr(), "/python").unwrap().text();
    assert!(
        info.contains(&format!("\"prefix\": \"{}\"", venv.display())),
        "{info}"
    );

    // Outside the venv the package is not importable: it really came from the venv.
    let plain = ServerBuilder::new("basic:app")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .start();
    assert_eq!(
        http::get(plain.addr(), "/import?ferricorn_venv_probe")
            .unwrap()
            .status,
        500
    );
}

#[test]
fn a_virtualenv_of_another_python_version_is_refused_with_exit_3() {
    let venv = scratch("venv-other");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    std::fs::write(venv.join("bin/python"), "").unwrap();
    std::fs::write(
        venv.join("pyvenv.cfg"),
        "home = /nowhere\nversion = 2.7.18\n",
    )
    .unwrap();
    let mut server = ServerBuilder::new("basic:app")
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .spawn();
    let status = server.wait_exit(std::time::Duration::from_secs(20));
    assert_eq!(status.code(), Some(3), "{}", server.log());
    assert!(
        server.log().contains("is for Python 2.7"),
        "{}",
        server.log()
    );
}

#[test]
fn pythonpath_entries_come_first_on_sys_path() {
    let a = scratch("pp-a");
    let b = scratch("pp-b");
    std::fs::write(a.join("pp_probe.py"), "MESSAGE = 'from a'\n").unwrap();
    std::fs::write(b.join("pp_probe2.py"), "MESSAGE = 'from b'\n").unwrap();
    let list = format!("{},{}", a.display(), b.display());
    let server = ServerBuilder::new("basic:app")
        .args(&["--pythonpath", &list])
        .start();
    assert_eq!(
        http::get(server.addr(), "/import?pp_probe").unwrap().text(),
        "from a"
    );
    assert_eq!(
        http::get(server.addr(), "/import?pp_probe2")
            .unwrap()
            .text(),
        "from b"
    );
    let info = http::get(server.addr(), "/python").unwrap().text();
    let first = format!(
        "\"path\": [\"{}\", \"{}\", \"{}\"",
        a.display(),
        b.display(),
        crate::util::apps_dir().display()
    );
    assert!(
        info.contains(&first),
        "--pythonpath, then the app dir, first on sys.path: {info}"
    );
}

#[test]
fn extension_modules_load_against_the_libpython_the_build_linked() {
    // With a static libpython the C API lives in the ferricorn executable, and
    // extension modules find it only if the executable exports it; with a shared
    // one, it must be the build interpreter's. Either way, stdlib and
    // site-packages extensions import.
    let venv = crate::util::test_venv();
    assert!(venv.join("bin/python").exists(), "run ./scripts/test");
    let server = ServerBuilder::new("basic:app")
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .start();
    let response = http::get(
        server.addr(),
        "/native?math,_json,_socket,select,_struct,markupsafe._speedups",
    )
    .unwrap();
    let text = response.text();
    assert_eq!(response.status, 200, "{text}\n{}", server.log());
    assert!(text.contains("lib-dynload/_json.cpython-"), "{text}");
    assert!(
        text.contains("site-packages/markupsafe/_speedups.cpython-"),
        "{text}"
    );

    let (_, prefix) = build_python_facts();
    let libpython = text.split("\"libpython\": ").nth(1).unwrap();
    match env!("FERRICORN_LIBPYTHON") {
        "static" => assert_eq!(libpython, "[]}", "no libpython.so may be loaded"),
        _ => assert!(
            libpython.starts_with(&format!("[\"{prefix}/")) && !libpython.contains("\", \""),
            "one libpython, the build interpreter's: {libpython}"
        ),
    }
}

#[test]
fn version_names_the_cpython_inside_and_how_it_is_linked() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferricorn"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (version, _) = build_python_facts();
    let minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    assert_eq!(
        text.trim(),
        format!(
            "ferricorn {} (CPython {minor}, {} libpython; built with {BUILD_PYTHON})",
            env!("CARGO_PKG_VERSION"),
            env!("FERRICORN_LIBPYTHON")
        )
    );
}

#[test]
fn a_fixed_address_build_leaves_libpython_data_unwritten_in_the_master() {
    // A static libpython brings some 1.1 MiB of data full of pointers. In a
    // position-independent executable (the default) the loader writes every page
    // of it at start, making it private to the master, which runs no Python.
    // Linked at a fixed address (FERRICORN_PIE=0), nothing writes those pages
    // until a worker does. Counted: the master's copied-on-write ("Anonymous")
    // pages of its executable's mappings.
    let server = ServerBuilder::new("basic:app").workers(1).start();
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_ferricorn")).unwrap();
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", server.pid)).unwrap();
    let written_kib = copied_pages_of(&smaps, binary.to_str().unwrap());
    match (env!("FERRICORN_LIBPYTHON"), env!("FERRICORN_EXECUTABLE")) {
        // Measured: 56 KiB.
        ("static", "fixed") => assert!(
            written_kib < 256,
            "{written_kib} KiB of the executable written by the master"
        ),
        // Measured: 1,508 KiB (a debug build).
        ("static", _) => assert!(written_kib > 512, "{written_kib} KiB"),
        _ => {}
    }
}

/// The KiB of a process's mappings of FILE that are private copies ("Anonymous:"
/// in smaps), from its smaps text.
fn copied_pages_of(smaps: &str, file: &str) -> u64 {
    let mut in_file = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_mapping = fields.first().is_some_and(|range| {
            range.contains('-') && range.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        });
        if is_mapping {
            in_file = fields.get(5) == Some(&file);
        } else if let (true, Some(value)) = (in_file, line.strip_prefix("Anonymous:")) {
            kib += value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap();
        }
    }
    kib
}
