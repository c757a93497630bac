//! ferricorn's Python side: the interpreter it runs on, loading the app, and
//! calling it per PEP 3333.
//!
//! The worker owns sockets and HTTP; this crate only sees a parsed [`Request`] and
//! streams the app's answer into a [`ResponseSink`]. All Python objects live here.

mod addr;
mod app;
mod current_sink;
mod environ;
mod hooks;
mod host;
mod input;
mod loader;
mod preload;
mod start_response;

pub use addr::{Local, Peer};
pub use app::{App, CallError, Outcome, Paused, Request, ResponseSink};
pub use hooks::{Hooks, HOOKS_PY};
pub use host::{
    check_readable_as, prepare_worker, set_sys_path, HostError, Interpreter, PythonOptions,
};
pub use input::{Body, BodySource, SharedSource};
pub use loader::AppLoadError;
pub use preload::{preload, worker_after_preload, ForkProtocol};
pub use pyo3::Python;
