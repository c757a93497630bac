//! ferricorn as Python loads it: the extension module `ferricorn._native`, whose
//! `main` the `ferricorn` script (python/ferricorn/__main__.py) calls with the
//! command line. From there the process is ferricorn's: the master runs inside that
//! call, every worker is a fork of it, and it never returns to Python — it exits
//! with the status the run chose ([`ferricorn_signals::exit_with`] is the last thing
//! that runs).

mod run;

use std::ffi::OsString;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// Run ferricorn with `argv` (the command line, `argv[0]` the command); `restart`
/// is what a USR2 upgrade executes. Never returns.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<OsString>, restart: Vec<OsString>) -> PyResult<()> {
    let interpreter = ferricorn_wsgi::Interpreter::read(py)?;
    // What Python made at start-up is shared by every worker, each a fork of this
    // process: frozen, no collection in a worker touches (and so copies) its pages.
    py.run(c"import gc\ngc.freeze()", None, None)?;
    let mut restart = restart.into_iter();
    let exe = restart
        .next()
        .map(PathBuf::from)
        .ok_or_else(|| PyValueError::new_err("restart: the command is missing"))?;
    let host = run::Host {
        args: argv,
        restart: (exe, restart.collect()),
        interpreter,
    };
    // The master holds no GIL while it runs: it runs no Python, and each fork takes
    // the GIL for CPython's fork protocol.
    let exit = py.detach(move || std::panic::catch_unwind(AssertUnwindSafe(|| run::run(&host))));
    let _ = std::io::stdout().flush();
    match exit {
        Ok(exit) => ferricorn_signals::exit_with(exit),
        // The panic hook has printed it; never unwind into the launcher's Python
        // (in a worker that would go on running the master's script).
        Err(_) => std::process::exit(101),
    }
}
