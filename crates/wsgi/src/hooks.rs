//! gunicorn server hooks (from a gunicorn.conf.py) run in a worker's interpreter:
//! `post_fork`, `post_worker_init`, `pre_request`, `post_request`, `worker_exit`.
//! An exception in a hook is logged with its traceback and the worker goes on.

use std::ffi::CString;
use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule, PyTuple};

/// The Python helper, also used by the binary to run the master's hooks in a
/// child interpreter (`python -c HOOKS_PY …`).
pub const HOOKS_PY: &str = include_str!("hooks.py");

pub struct Hooks {
    module: Py<PyModule>,
    hooks: Py<PyDict>,
    server: Py<PyAny>,
    worker: Py<PyAny>,
}

impl Hooks {
    /// Run `path` and keep the hooks among `names`.
    pub fn load(
        py: Python<'_>,
        path: &Path,
        names: &[String],
        age: u32,
        master_pid: i32,
        workers: u32,
    ) -> PyResult<Hooks> {
        let code = CString::new(HOOKS_PY).expect("hooks.py has no NUL byte");
        let module = PyModule::from_code(
            py,
            code.as_c_str(),
            c"<ferricorn hooks>",
            c"_ferricorn_hooks",
        )?;
        let names = PyList::new(py, names)?;
        let loaded = module.getattr("load")?.call1((
            path.display().to_string(),
            names,
            age,
            master_pid,
            workers,
        ))?;
        let loaded = loaded.cast::<PyTuple>()?;
        Ok(Hooks {
            hooks: loaded.get_item(0)?.cast_into::<PyDict>()?.unbind(),
            server: loaded.get_item(1)?.unbind(),
            worker: loaded.get_item(2)?.unbind(),
            module: module.unbind(),
        })
    }

    pub fn has(&self, py: Python<'_>, name: &str) -> bool {
        self.hooks.bind(py).contains(name).unwrap_or(false)
    }

    pub fn post_fork(&self, py: Python<'_>) {
        self.call(py, "post_fork", |s| {
            PyTuple::new(py, [s.server.bind(py), s.worker.bind(py)])
        });
    }

    pub fn post_worker_init(&self, py: Python<'_>) {
        self.call(py, "post_worker_init", |s| {
            PyTuple::new(py, [s.worker.bind(py)])
        });
    }

    pub fn worker_exit(&self, py: Python<'_>) {
        self.call(py, "worker_exit", |s| {
            PyTuple::new(py, [s.server.bind(py), s.worker.bind(py)])
        });
    }

    /// A `req` object for pre_request/post_request.
    pub fn request<'py>(
        &self,
        py: Python<'py>,
        method: &[u8],
        uri: &[u8],
        minor: u8,
        headers: &[(&[u8], &[u8])],
    ) -> PyResult<Bound<'py, PyAny>> {
        let list = PyList::empty(py);
        for (n, v) in headers {
            let name = String::from_utf8_lossy(n).to_ascii_uppercase();
            list.append((name, latin1(v)))?;
        }
        self.module.bind(py).getattr("Request")?.call1((
            latin1(method),
            latin1(uri),
            (1, minor),
            list,
        ))
    }

    pub fn pre_request(&self, py: Python<'_>, req: &Bound<'_, PyAny>) {
        self.call(py, "pre_request", |s| {
            PyTuple::new(py, [s.worker.bind(py).clone(), req.clone()])
        });
    }

    pub fn post_request(
        &self,
        py: Python<'_>,
        req: &Bound<'_, PyAny>,
        environ: &Bound<'_, PyAny>,
        status: &[u8],
        headers: &[(Vec<u8>, Vec<u8>)],
    ) {
        let resp = (|| -> PyResult<Bound<'_, PyAny>> {
            let list = PyList::empty(py);
            for (n, v) in headers {
                list.append((latin1(n), latin1(v)))?;
            }
            self.module
                .bind(py)
                .getattr("Response")?
                .call1((latin1(status), list))
        })();
        match resp {
            Ok(resp) => self.call(py, "post_request", |s| {
                PyTuple::new(
                    py,
                    [
                        s.worker.bind(py).clone(),
                        req.clone(),
                        environ.clone(),
                        resp.clone(),
                    ],
                )
            }),
            Err(e) => self.log_error(py, "post_request", e),
        }
    }

    fn call<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        args: impl FnOnce(&Self) -> PyResult<Bound<'py, PyTuple>>,
    ) {
        let Ok(Some(hook)) = self.hooks.bind(py).get_item(name) else {
            return;
        };
        if let Err(e) = args(self).and_then(|a| hook.call1(a)) {
            self.log_error(py, name, e);
        }
    }

    fn log_error(&self, py: Python<'_>, name: &str, e: PyErr) {
        let tb = crate::app::format_traceback(py, &e);
        log::error!("Exception in the {name} hook\n{}", tb.trim_end());
    }
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}
