//! Loading the app from its spec (`module:callable`, `module:factory(...)`).
//!
//! The parsing and importing are Python (`loader.py`): it is Python's own import
//! machinery and `ast.literal_eval` that define what gunicorn accepts, so the
//! loader uses them rather than re-implementing a Python literal parser.

use pyo3::prelude::*;

/// The app could not be loaded; `message` is one line for the user, `detail` the
/// full traceback when there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AppLoadError {
    pub message: String,
    pub detail: Option<String>,
}

pub(crate) fn load<'py>(py: Python<'py>, spec: &str) -> Result<Bound<'py, PyAny>, AppLoadError> {
    let module = PyModule::from_code(
        py,
        c_str(include_str!("loader.py")).as_c_str(),
        c"<ferricorn loader>",
        c"_ferricorn_loader",
    )
    .map_err(|e| internal(py, e))?;
    match module.getattr("load").and_then(|load| load.call1((spec,))) {
        Ok(app) => Ok(app),
        Err(err) => {
            let exc = err.value(py);
            let message = module
                .getattr("describe")
                .and_then(|d| d.call1((exc,)))
                .and_then(|s| s.extract::<String>())
                .unwrap_or_else(|_| err.to_string());
            let is_plain = exc
                .get_type()
                .name()
                .map(|n| n == "AppLoadError")
                .unwrap_or(false);
            let detail = if is_plain {
                None
            } else {
                module
                    .getattr("full")
                    .and_then(|f| f.call1((exc,)))
                    .and_then(|s| s.extract::<String>())
                    .ok()
            };
            Err(AppLoadError { message, detail })
        }
    }
}

fn internal(py: Python<'_>, e: PyErr) -> AppLoadError {
    AppLoadError {
        message: format!("internal error in ferricorn's app loader: {}", e.value(py)),
        detail: None,
    }
}

fn c_str(s: &str) -> std::ffi::CString {
    // The loader source is ours and contains no NUL byte.
    std::ffi::CString::new(s).expect("loader.py contains no NUL byte")
}
