//! ferricorn's Python side: start the embedded CPython the right way, load the
//! app, and call it per PEP 3333.
//!
//! The worker owns sockets and HTTP; this crate only sees a parsed [`Request`] and
//! streams the app's answer into a [`ResponseSink`]. All Python objects live here.

mod app;
mod environ;
mod hooks;
mod input;
mod interpreter;
mod loader;
mod preload;
mod start_response;

pub use app::{App, CallError, Outcome, Paused, Request, ResponseSink};
pub use hooks::{Hooks, HOOKS_PY};
pub use input::{Body, BodySource, SharedSource};
pub use interpreter::{initialize, BootError, PythonOptions, BUILD_PYTHON, PYTHON_VERSION};
pub use loader::AppLoadError;
pub use preload::{preload, worker_after_preload, ForkProtocol, PreloadError};
pub use pyo3::Python;
