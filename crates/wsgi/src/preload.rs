//! Forking a process that runs CPython, and `--preload`: the master imports the
//! app, then forks workers that share it.
//!
//! Every worker is a fork of the master's (idle) interpreter, so CPython's fork
//! protocol must bracket every fork: with the GIL held,
//! `PyOS_BeforeFork` → fork → `PyOS_AfterFork_Child` in the child (without it, the
//! child's interpreter keeps the parent's locks and threads) or
//! `PyOS_AfterFork_Parent` in the parent. The import runs with the cyclic GC off
//! and ends with `gc.freeze()`, so the objects it made are never touched by a
//! collection in the workers and their pages stay shared (measured: without the
//! freeze, preloading saves nothing).
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use pyo3::ffi;
use pyo3::prelude::*;

use crate::app::App;
use crate::host::{set_sys_path, PythonOptions};
use crate::loader::AppLoadError;

/// Import the app in this (master) process, GC frozen after.
pub fn preload(
    options: &PythonOptions,
    spec: &str,
    multiprocess: bool,
) -> Result<App, AppLoadError> {
    Python::attach(|py| {
        crate::host::sync_environ(py)
            .and_then(|()| set_sys_path(py, options))
            .map_err(|e| AppLoadError {
                message: format!("cannot set up sys.path: {e}"),
                detail: None,
            })?;
        let _ = py.run(c"import gc\ngc.disable()", None, None);
        let app = App::load(py, spec, multiprocess)?;
        let _ = py.run(c"import gc\ngc.freeze()", None, None);
        Ok(app)
    })
}

/// In a worker forked from a preloading master: the GC was off for the import.
pub fn worker_after_preload(py: Python<'_>) {
    let _ = py.run(c"import gc\ngc.enable()", None, None);
}

/// CPython's side of one fork (see the module docs). Holds the GIL from `before`
/// until `after_*`.
#[derive(Default)]
pub struct ForkProtocol {
    gil: Option<ffi::PyGILState_STATE>,
}

impl ForkProtocol {
    pub fn before(&mut self) {
        // SAFETY: the interpreter is initialised (ferricorn runs inside it); PyGILState_Ensure
        // takes the GIL for this thread, and PyOS_BeforeFork must be called with it.
        unsafe {
            self.gil = Some(ffi::PyGILState_Ensure());
            ffi::PyOS_BeforeFork();
        }
    }

    pub fn after_parent(&mut self) {
        // SAFETY: paired with `before` in this process; the GIL is still held.
        unsafe {
            ffi::PyOS_AfterFork_Parent();
            if let Some(g) = self.gil.take() {
                ffi::PyGILState_Release(g);
            }
        }
    }

    pub fn after_child(&mut self) {
        // SAFETY: first thing in the forked child, GIL held since `before`;
        // PyOS_AfterFork_Child resets the interpreter's locks and thread list for
        // the single thread that exists now.
        unsafe {
            ffi::PyOS_AfterFork_Child();
            if let Some(g) = self.gil.take() {
                ffi::PyGILState_Release(g);
            }
        }
    }
}
