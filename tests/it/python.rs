//! ferricorn runs on the interpreter of the venv it is installed in — its stdlib,
//! site-packages and C extensions — whatever PATH or VIRTUAL_ENV say, and refuses
//! in one line (exit 1, nothing bound) where that cannot work.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::http;
use crate::util::scratch;
use crate::util::{bin, ServerBuilder};

/// The venv `ferricorn` is installed in (`…/venv/bin/ferricorn`).
fn installed_venv() -> PathBuf {
    Path::new(bin())
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `sys.version` (short), `sys.prefix` and `sys.base_prefix` of the venv's python.
fn venv_python_facts() -> (String, String, String) {
    let out = Command::new(installed_venv().join("bin/python"))
        .args([
            "-c",
            "import sys; print(sys.version.split()[0]); print(sys.prefix); print(sys.base_prefix)",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().map(str::to_string);
    (
        lines.next().unwrap(),
        lines.next().unwrap(),
        lines.next().unwrap(),
    )
}

/// A venv without pip, of the same base interpreter as the installed one.
fn bare_venv(at: &Path) {
    let (_, _, base) = venv_python_facts();
    let made = Command::new(Path::new(&base).join("bin/python3"))
        .args(["-m", "venv", "--without-pip"])
        .arg(at)
        .status()
        .unwrap();
    assert!(made.success());
}

#[test]
fn runs_the_venvs_interpreter_from_a_bare_environment() {
    // As a Procfile, a systemd ExecStart= or a Dockerfile CMD start it: by path,
    // the venv not activated, no pyenv shims on PATH.
    let (version, prefix, _) = venv_python_facts();
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
    assert_eq!(
        http::get(server.addr(), "/import?from_pythonpath")
            .unwrap()
            .text(),
        "PYTHONPATH works"
    );
}

#[test]
fn stdlib_and_site_packages_extension_modules_load() {
    let server = ServerBuilder::new("basic:app").env_clear().start();
    let response = http::get(
        server.addr(),
        "/native?math,_json,_socket,select,_struct,zlib,pyexpat,_ssl,_sqlite3,_ctypes,markupsafe._speedups",
    )
    .unwrap();
    let text = response.text();
    assert_eq!(response.status, 200, "{text}\n{}", server.log());
    assert!(
        text.contains("site-packages/markupsafe/_speedups.cpython-"),
        "{text}"
    );
}

#[test]
fn python_dash_m_ferricorn_serves_the_same() {
    let python = installed_venv().join("bin/python");
    let server = ServerBuilder::new("basic:app")
        .program(&python)
        .prefix_args(&["-m", "ferricorn"])
        .env_clear()
        .start();
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    let (_, prefix, _) = venv_python_facts();
    let info = http::get(server.addr(), "/python").unwrap().text();
    assert!(
        info.contains(&format!("\"prefix\": \"{prefix}\"")),
        "{info}"
    );
}

#[test]
fn the_activated_venv_is_the_one_it_runs_in() {
    let venv = installed_venv();
    let path = format!("{}:/usr/bin:/bin", venv.join("bin").display());
    let server = ServerBuilder::new("basic:app")
        .env_clear()
        .env("PATH", &path)
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .start();
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

/// Start with `VIRTUAL_ENV=venv` and expect a refusal: exit 1, one error line
/// containing `expect`, and nothing bound.
fn refused_with_virtual_env(venv: &Path, expect: &str) {
    let mut server = ServerBuilder::new("basic:app")
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .spawn();
    let status = server.wait_exit(Duration::from_secs(20));
    let log = server.log();
    assert_eq!(status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("[ERROR]")).collect();
    assert_eq!(errors.len(), 1, "one line: {log}");
    assert!(errors[0].contains(expect), "{expect:?} in {log}");
    assert!(
        errors[0].contains(&format!("VIRTUAL_ENV={}", venv.display())),
        "{log}"
    );
    assert!(!log.contains("Listening at"), "nothing bound: {log}");
}

#[test]
fn a_virtual_env_that_is_not_there_or_broken_is_refused_in_one_line() {
    let dir = scratch("venv-bad");
    refused_with_virtual_env(&dir.join("deleted"), "no such directory");

    let no_python = dir.join("no-python");
    std::fs::create_dir_all(no_python.join("bin")).unwrap();
    refused_with_virtual_env(&no_python, "has no interpreter");

    let dangling = dir.join("dangling");
    std::fs::create_dir_all(dangling.join("bin")).unwrap();
    std::os::unix::fs::symlink("/nowhere/python3", dangling.join("bin/python")).unwrap();
    refused_with_virtual_env(&dangling, "has no interpreter");

    let broken = dir.join("broken-cfg");
    std::fs::create_dir_all(broken.join("bin")).unwrap();
    std::os::unix::fs::symlink(
        installed_venv().join("bin/python"),
        broken.join("bin/python"),
    )
    .unwrap();
    std::fs::write(broken.join("pyvenv.cfg"), "version = 3.11.2\n").unwrap();
    refused_with_virtual_env(&broken, "pyvenv.cfg has no `home = ` line");
    std::fs::write(broken.join("pyvenv.cfg"), "home = /usr/bin\n{{garbage\n").unwrap();
    refused_with_virtual_env(&broken, "pyvenv.cfg line 2");
    std::fs::remove_file(broken.join("pyvenv.cfg")).unwrap();
    refused_with_virtual_env(&broken, "has no pyvenv.cfg");
}

#[test]
fn a_virtual_env_of_another_python_or_another_venv_is_refused() {
    let dir = scratch("venv-other");
    let other = dir.join("py27");
    std::fs::create_dir_all(other.join("bin")).unwrap();
    std::fs::write(other.join("bin/python"), "").unwrap();
    std::fs::write(
        other.join("pyvenv.cfg"),
        "home = /nowhere\nversion = 2.7.18\n",
    )
    .unwrap();
    refused_with_virtual_env(&other, "is a Python 2.7 environment");

    let sibling = dir.join("sibling");
    bare_venv(&sibling);
    refused_with_virtual_env(&sibling, "is another environment");
}

#[test]
fn an_extension_built_for_another_python_is_refused_in_one_line() {
    // The package as a venv of another minor would see it: same files, but the
    // extension module's tag names another CPython.
    let venv = scratch("venv-minor").join("venv");
    bare_venv(&venv);
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    let package = site.join("ferricorn");
    std::fs::create_dir_all(&package).unwrap();
    let installed = installed_site_packages().join("ferricorn");
    for entry in std::fs::read_dir(&installed).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.ends_with(".py") {
            std::fs::copy(entry.path(), package.join(&name)).unwrap();
        } else if name.starts_with("_native.") {
            std::fs::copy(
                entry.path(),
                package.join("_native.cpython-399-x86_64-linux-gnu.so"),
            )
            .unwrap();
        }
    }
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-m", "ferricorn", "basic:app"]);
    let stderr = refused_in_one_line(cmd);
    assert!(
        stderr.contains("is built for another Python (_native.cpython-399-x86_64-linux-gnu.so)")
            && stderr.contains("runs on CPython 3."),
        "{stderr}"
    );
}

#[test]
fn a_venv_whose_interpreter_was_replaced_by_another_version_is_told_in_one_line() {
    // As when the system python a venv was made of is upgraded: the venv's python is
    // now another minor, and ferricorn sits in the old minor's site-packages.
    let venv = scratch("venv-replaced").join("venv");
    bare_venv(&venv);
    let old = venv.join("lib/python3.9/site-packages/ferricorn");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("__init__.py"), "").unwrap();
    let script = std::fs::read_to_string(bin()).unwrap();
    let body = script.split_once('\n').unwrap().1;
    let command = venv.join("bin/ferricorn");
    std::fs::write(
        &command,
        format!("#!{}\n{body}", venv.join("bin/python").display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &command,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let mut cmd = Command::new(&command);
    cmd.arg("basic:app");
    let stderr = refused_in_one_line(cmd);
    assert!(
        stderr.contains("it is installed for another Python (")
            && stderr.contains("lib/python3.9/site-packages)"),
        "{stderr}"
    );
}

/// Run `cmd` from an empty environment; it must exit 1 with one line on stderr,
/// which is returned.
fn refused_in_one_line(mut cmd: Command) -> String {
    let out = cmd.env_clear().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

fn installed_site_packages() -> PathBuf {
    let out = Command::new(installed_venv().join("bin/python"))
        .args([
            "-c",
            "import ferricorn, os; print(os.path.dirname(os.path.dirname(ferricorn.__file__)))",
        ])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
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
fn version_names_the_interpreter_it_runs_on() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (version, _, _) = venv_python_facts();
    assert_eq!(
        text.trim(),
        format!(
            "ferricorn {} on CPython {version} ({})",
            env!("CARGO_PKG_VERSION"),
            installed_venv().join("bin/python").display()
        )
    );
}
