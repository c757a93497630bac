//! Starting CPython inside a worker.
//!
//! Two facts drive this module (measured, see docs/design.md): a process that only
//! links libpython computes `sys.prefix` by searching `$PATH` for `python3`, and so
//! may mix another installation's stdlib into ours; and Python must not install
//! signal handlers, because Rust owns every signal. So CPython is started through
//! `PyConfig` with `program_name` set explicitly — the virtualenv's python when
//! `VIRTUAL_ENV` is set, else the interpreter this binary was built against — and
//! `install_signal_handlers = 0`. Environment variables (`PYTHONPATH`, …) are read
//! as `python3` reads them.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_char, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyList;

/// The interpreter this binary was built against.
pub const BUILD_PYTHON: &str = env!("FERRICORN_BUILD_PYTHON");
/// Its `major.minor`, which a virtualenv must match.
pub const PYTHON_VERSION: &str = env!("FERRICORN_PYTHON_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("virtualenv {venv} is for Python {found}, but ferricorn was built against Python {PYTHON_VERSION} ({BUILD_PYTHON}); rebuild ferricorn with that venv's python or use a {PYTHON_VERSION} venv")]
    VenvVersion { venv: String, found: String },
    #[error("VIRTUAL_ENV={venv} has no bin/python; is the virtualenv deleted?")]
    VenvMissing { venv: String },
    #[error("Python failed to start: {0}")]
    Init(String),
    #[error("cannot set up sys.path: {0}")]
    SysPath(String),
}

/// Where the app lives.
#[derive(Debug, Clone)]
pub struct PythonOptions {
    /// Put first on `sys.path` after `pythonpath` (gunicorn's `--chdir`, default cwd).
    pub app_dir: PathBuf,
    /// `--pythonpath` entries, put before `app_dir`.
    pub pythonpath: Vec<PathBuf>,
}

/// Start CPython in this process (once), then set up `sys.path`. On return the GIL
/// is released; use [`Python::attach`].
pub fn initialize(options: &PythonOptions) -> Result<(), BootError> {
    let program = program_name()?;
    check_stdlib_readable()?;
    start_interpreter(&program)?;
    Python::attach(|py| {
        // On SIGABRT (the master's timeout kill) and on crashes, write every
        // thread's Python traceback to stderr before dying: that is where it hung.
        py.run(
            c"import faulthandler, sys\nfaulthandler.enable(file=sys.stderr, all_threads=True)",
            None,
            None,
        )?;
        set_sys_path(py, options)
    })
    .map_err(|e| BootError::SysPath(e.to_string()))
}

/// CPython aborts the whole process, with no reason a master can report, when it
/// cannot read its standard library — as when `--user` names a user that cannot
/// enter the build interpreter's directory (pyenv under /root, say). Check first.
fn check_stdlib_readable() -> Result<(), BootError> {
    let exe = Path::new(BUILD_PYTHON);
    let Some(prefix) = exe.parent().and_then(Path::parent) else {
        return Ok(());
    };
    let stdlib = prefix.join("lib").join(format!("python{PYTHON_VERSION}"));
    if let Err(e) = std::fs::read_dir(&stdlib) {
        return Err(BootError::Init(format!(
            "cannot read the Python standard library at {} as uid {} ({e}); with --user, choose a user that can read the Python installation",
            stdlib.display(),
            std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(u32::MAX)
        )));
    }
    Ok(())
}

fn program_name() -> Result<PathBuf, BootError> {
    let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) else {
        return Ok(PathBuf::from(BUILD_PYTHON));
    };
    let venv = PathBuf::from(venv);
    let display = venv.display().to_string();
    let python = venv.join("bin").join("python");
    if !python.exists() {
        return Err(BootError::VenvMissing { venv: display });
    }
    if let Some(found) = venv_version(&venv) {
        if found != PYTHON_VERSION {
            return Err(BootError::VenvVersion {
                venv: display,
                found,
            });
        }
    }
    Ok(python)
}

/// `major.minor` from the venv's `pyvenv.cfg` (`version = 3.11.7` or `version_info = …`).
fn venv_version(venv: &Path) -> Option<String> {
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        let key = key.trim();
        if key != "version" && key != "version_info" {
            return None;
        }
        let mut parts = value.trim().split('.');
        Some(format!("{}.{}", parts.next()?, parts.next()?))
    })
}

fn start_interpreter(program: &Path) -> Result<(), BootError> {
    let program =
        CString::new(program.as_os_str().as_bytes()).map_err(|e| BootError::Init(e.to_string()))?;
    let args: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let mut argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();

    let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitPythonConfig fully initialises the struct it is given;
    // every later call gets that initialised struct, and PyConfig_Clear frees what
    // the setters allocated before it goes out of scope. Strings passed in are
    // NUL-terminated and outlive the calls (CPython copies them).
    unsafe {
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let config = config.assume_init_mut();
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let status =
            ffi::PyConfig_SetBytesString(config, &mut config.program_name, program.as_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(config);
            return Err(BootError::Init(status_message(status.err_msg)));
        }
        let status =
            ffi::PyConfig_SetBytesArgv(config, argv.len() as ffi::Py_ssize_t, argv.as_mut_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(config);
            return Err(BootError::Init(status_message(status.err_msg)));
        }
        let status = ffi::Py_InitializeFromConfig(config);
        ffi::PyConfig_Clear(config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(BootError::Init(status_message(status.err_msg)));
        }
        // Initialisation leaves this thread holding the GIL; release it so that
        // Python::attach (and the app's own threads) can take it.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

fn status_message(msg: *const c_char) -> String {
    if msg.is_null() {
        return "unknown error".to_string();
    }
    // SAFETY: CPython's PyStatus.err_msg is a static NUL-terminated C string.
    unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned()
}

fn set_sys_path(py: Python<'_>, options: &PythonOptions) -> PyResult<()> {
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
    fn venv_version_reads_pyvenv_cfg() {
        let dir = std::env::temp_dir().join(format!("ferricorn-venv-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("pyvenv.cfg"),
            "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.12.1\n",
        )
        .unwrap();
        assert_eq!(venv_version(&dir).as_deref(), Some("3.12"));
        std::fs::write(dir.join("pyvenv.cfg"), "version_info = 3.11.7.final.0\n").unwrap();
        assert_eq!(venv_version(&dir).as_deref(), Some("3.11"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
