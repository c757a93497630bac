//! The CPython ferricorn runs on: the interpreter of the environment it is
//! installed in, already running when ferricorn's code starts.
//!
//! ferricorn ships as an extension module (`ferricorn._native`); `venv/bin/ferricorn`
//! is a script that the venv's own python runs. So the stdlib, site-packages and C
//! extensions are always those of that interpreter's build — pyenv's shared
//! libpython, Debian's static python3, a Docker image's — and nothing here has to
//! find them. The master keeps that interpreter idle (it runs no Python once
//! ferricorn's loop starts) and workers are forks of it, each set up by
//! [`prepare_worker`]. What this module checks is what Python itself would not:
//! a `VIRTUAL_ENV` that names another (or a broken) environment, and a `--user`
//! that cannot read the interpreter's files.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// Where the app lives.
#[derive(Debug, Clone)]
pub struct PythonOptions {
    /// Put first on `sys.path` after `pythonpath` (gunicorn's `--chdir`, default cwd).
    pub app_dir: PathBuf,
    /// `--pythonpath` entries, put before `app_dir`.
    pub pythonpath: Vec<PathBuf>,
}

/// Facts about the running interpreter, read once in the master at start.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// `sys.executable`: the venv's `bin/python`; hooks and gunicorn.conf.py run with it.
    pub executable: PathBuf,
    /// `sys.version_info`'s first three, e.g. `3.11.2`.
    pub version: String,
    pub prefix: PathBuf,
    /// The directories on `sys.path` (zip files and missing entries left out).
    pub path: Vec<PathBuf>,
}

/// Why ferricorn refuses to start on this interpreter or environment; one line each.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("VIRTUAL_ENV={venv}: {reason}; ferricorn runs on {interpreter} (environment {prefix}), so the app's packages would not be the ones in VIRTUAL_ENV: run {venv}/bin/ferricorn (install ferricorn there), or unset VIRTUAL_ENV")]
    VirtualEnv {
        venv: String,
        reason: String,
        interpreter: String,
        prefix: String,
    },
    #[error("the worker user (uid {uid}, gid {gid}) cannot read {path} ({reason}), which the app is served from; give that user read access, or choose another --user")]
    Unreadable {
        uid: u32,
        gid: u32,
        path: String,
        reason: String,
    },
    #[error("{0}")]
    Python(String),
}

impl Interpreter {
    pub fn read(py: Python<'_>) -> PyResult<Interpreter> {
        let sys = py.import("sys")?;
        let path_of = |v: Bound<'_, PyAny>| -> PyResult<PathBuf> {
            Ok(PathBuf::from(v.extract::<OsString>()?))
        };
        let (major, minor, micro): (u8, u8, u8) = sys
            .getattr("version_info")?
            .get_item(pyo3::types::PySlice::new(py, 0, 3, 1))?
            .extract()?;
        let version = format!("{major}.{minor}.{micro}");
        let mut path = Vec::new();
        for entry in sys.getattr("path")?.cast_into::<PyList>()?.iter() {
            if let Ok(p) = entry.extract::<OsString>() {
                let p = PathBuf::from(p);
                if p.is_dir() && !path.contains(&p) {
                    path.push(p);
                }
            }
        }
        Ok(Interpreter {
            executable: path_of(sys.getattr("executable")?)?,
            version,
            prefix: path_of(sys.getattr("prefix")?)?,
            path,
        })
    }

    /// `CPython 3.11.2 (/srv/app/venv/bin/python)`: for `--version` and errors.
    pub fn describe(&self) -> String {
        format!("CPython {} ({})", self.version, self.executable.display())
    }

    /// An activated virtualenv must be the environment ferricorn runs in: Python
    /// itself ignores `VIRTUAL_ENV`, so one that names another (or a deleted, or a
    /// broken) environment would have the app import from somewhere the user did
    /// not mean. Said in one line, with the cause as the OS gives it.
    pub fn check_virtual_env(&self, venv: &Path) -> Result<(), HostError> {
        let refuse = |reason: String| HostError::VirtualEnv {
            venv: venv.display().to_string(),
            reason,
            interpreter: self.describe(),
            prefix: self.prefix.display().to_string(),
        };
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same(venv, &self.prefix) {
            return Ok(());
        }
        let cause = |e: &io::Error| match e.kind() {
            io::ErrorKind::NotFound => "no such directory".to_string(),
            io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        match std::fs::metadata(venv) {
            Err(e) => return Err(refuse(format!("cannot be read ({})", cause(&e)))),
            Ok(m) if !m.is_dir() => return Err(refuse("is not a directory".into())),
            Ok(_) => {}
        }
        if let Err(e) = std::fs::metadata(venv.join("bin/python")) {
            return Err(refuse(match e.kind() {
                io::ErrorKind::NotFound => {
                    "has no interpreter (no bin/python, or it points nowhere)".to_string()
                }
                _ => format!("cannot read bin/python ({})", cause(&e)),
            }));
        }
        let cfg = venv.join("pyvenv.cfg");
        let text = std::fs::read_to_string(&cfg).map_err(|e| {
            refuse(match e.kind() {
                io::ErrorKind::NotFound => "has no pyvenv.cfg, so it is not a virtualenv".into(),
                _ => format!("cannot read pyvenv.cfg ({})", cause(&e)),
            })
        })?;
        let venv_cfg = VenvCfg::parse(&text).map_err(|why| refuse(format!("pyvenv.cfg {why}")))?;
        if let Some(found) = venv_cfg.minor() {
            if Some(&found) != major_minor(&self.version).as_ref() {
                return Err(refuse(format!("is a Python {found} environment")));
            }
        }
        Err(refuse("is another environment".into()))
    }
}

/// What ferricorn reads of a `pyvenv.cfg` (`key = value` lines, as `site` reads them).
#[derive(Debug)]
struct VenvCfg {
    version: Option<String>,
}

impl VenvCfg {
    fn parse(text: &str) -> Result<VenvCfg, String> {
        let mut home = None;
        let mut version = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: `{line}` is not `key = value`", n + 1));
            };
            match key.trim() {
                "home" => home = Some(value.trim().to_string()),
                "version" | "version_info" => version = Some(value.trim().to_string()),
                _ => {}
            }
        }
        if home.is_none() {
            return Err("has no `home = ` line".into());
        }
        Ok(VenvCfg { version })
    }

    /// `major.minor` of `version = 3.11.7` (or `version_info = 3.11.7.final.0`).
    fn minor(&self) -> Option<String> {
        major_minor(self.version.as_deref()?)
    }
}

/// `3.11` of `3.11.7` (or of `3.11.7.final.0`).
fn major_minor(version: &str) -> Option<String> {
    let mut parts = version.split('.');
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

/// With `--user`/`--group`: check, before anything is bound, that workers will be
/// able to read what they import from — the interpreter's stdlib, site-packages,
/// the app directory — by running the interpreter as that user and listing each
/// directory. (Workers drop privileges after the fork; an unreadable site-packages
/// would otherwise surface as a ModuleNotFoundError inside the app.)
pub fn check_readable_as(
    interpreter: &Interpreter,
    uid: u32,
    gid: u32,
    groups: &[u32],
    dirs: &[PathBuf],
) -> Result<(), HostError> {
    const PROBE: &str = "import os, sys\nfor p in sys.argv[1:]:\n    try:\n        os.listdir(p)\n    except OSError as e:\n        print(p + '\\t' + (e.strerror or str(e)))\n        break\n";
    let mut probe = Command::new(&interpreter.executable);
    probe
        .arg("-I")
        .arg("-c")
        .arg(PROBE)
        .args(dirs)
        .stdin(Stdio::null())
        .current_dir("/");
    as_worker(&mut probe, uid, gid, groups);
    let out = probe.output();
    let unreadable = |path: String, reason: String| HostError::Unreadable {
        uid,
        gid,
        path,
        reason,
    };
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(unreadable(
                interpreter.executable.display().to_string(),
                "it cannot run it: permission denied".into(),
            ))
        }
        Err(e) => {
            return Err(HostError::Python(format!(
                "cannot run {} as uid {uid} to check what it can read: {e}",
                interpreter.executable.display()
            )))
        }
    };
    if !out.status.success() {
        // Python itself could not start as that user: its stdlib is unreadable.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(unreadable(
            interpreter.executable.display().to_string(),
            format!(
                "the interpreter cannot start: {}",
                last.unwrap_or("it failed")
            ),
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().next().and_then(|l| l.split_once('\t')) {
        Some((path, reason)) => Err(unreadable(path.to_string(), reason.to_string())),
        None => Ok(()),
    }
}

/// Run `cmd` with the ids a worker takes: the groups, then the gid, then the uid,
/// as the worker drops them (std's `uid`/`gid` would clear the supplementary
/// groups instead).
#[allow(unsafe_code)]
fn as_worker(cmd: &mut Command, uid: u32, gid: u32, groups: &[u32]) {
    use std::os::unix::process::CommandExt;
    let groups: Vec<libc::gid_t> = if groups.is_empty() {
        vec![gid]
    } else {
        groups.to_vec()
    };
    let root = nix::unistd::geteuid().is_root();
    let closure = move || -> io::Result<()> {
        // SAFETY: plain system calls on memory prepared before the fork; all three
        // are async-signal-safe, as code between fork and exec must be.
        unsafe {
            if root && libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls (see above) and
    // touches no lock or allocation of the parent's.
    unsafe {
        cmd.pre_exec(closure);
    }
}

/// In a worker, first thing after the fork: faulthandler (so a timeout's SIGABRT
/// writes every thread's traceback to stderr: that is where it hung), `os.environ`
/// as the process has it, and the app's directories first on `sys.path` (`None`:
/// the master put them there, `--preload`).
pub fn prepare_worker(py: Python<'_>, options: Option<&PythonOptions>) -> PyResult<()> {
    py.run(
        c"import faulthandler, sys\nfaulthandler.enable(file=sys.stderr, all_threads=True)",
        None,
        None,
    )?;
    sync_environ(py)?;
    match options {
        Some(options) => set_sys_path(py, options),
        None => Ok(()),
    }
}

/// `os.environ` is a copy Python made when it started; since then the master set
/// variables (`-e KEY=VALUE`) and removed others (the sockets systemd or an upgrade
/// handed over: no app may see those). Make the copy what the process has again.
pub fn sync_environ(py: Python<'_>) -> PyResult<()> {
    use std::os::unix::ffi::OsStrExt;
    let current = PyDict::new(py);
    for (key, value) in std::env::vars_os() {
        current.set_item(
            PyBytes::new(py, key.as_bytes()),
            PyBytes::new(py, value.as_bytes()),
        )?;
    }
    // As globals, so that the comprehension sees `current`.
    let scope = PyDict::new(py);
    scope.set_item("current", current)?;
    py.run(
        c"import os\ne = os.environb\nfor k in [k for k in e if k not in current]:\n    del e[k]\nfor k, v in current.items():\n    if e.get(k) != v:\n        e[k] = v\n",
        Some(&scope),
        None,
    )
}

/// `--check-config` and `--preload` import the app in the master: the same path.
pub fn set_sys_path(py: Python<'_>, options: &PythonOptions) -> PyResult<()> {
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    let mut front: Vec<String> = options
        .pythonpath
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    front.push(options.app_dir.display().to_string());
    for entry in front.iter().rev() {
        path.insert(0, entry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyvenv_cfg_gives_the_minor_and_needs_a_home() {
        let cfg = VenvCfg::parse(
            "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.12.1\n",
        )
        .unwrap();
        assert_eq!(cfg.minor().as_deref(), Some("3.12"));
        let cfg = VenvCfg::parse("home = /x\nversion_info = 3.11.7.final.0\n").unwrap();
        assert_eq!(cfg.minor().as_deref(), Some("3.11"));
        assert!(VenvCfg::parse("version = 3.11.2\n")
            .unwrap_err()
            .contains("home"));
        assert!(VenvCfg::parse("home = /x\ngarbage\n")
            .unwrap_err()
            .contains("line 2"));
    }
}
