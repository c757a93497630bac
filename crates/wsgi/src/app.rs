//! Calling the app for one request (PEP 3333 "Specification Details").

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList};

use crate::environ::Environ;
use crate::hooks::Hooks;
use crate::input::Body;
use crate::loader::{self, AppLoadError};
use crate::start_response::{Reused, StartResponse};

/// One parsed request, borrowed from the worker's buffers.
pub struct Request<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    pub minor_version: u8,
    pub headers: &'a [(&'a [u8], &'a [u8])],
    pub body: Body<'a>,
    pub peer: crate::Peer,
    pub local: &'a crate::Local,
    /// `http`, or `https` when a trusted proxy said so.
    pub url_scheme: &'static str,
}

/// Where the response goes. The worker decides framing and when bytes hit the socket.
pub trait ResponseSink {
    /// The status and headers are final (called once, before any body data).
    fn start(&mut self, status: &[u8], headers: &[(Vec<u8>, Vec<u8>)], close: bool);
    /// Body data. An error means the client is gone: the app's iteration stops.
    fn write(&mut self, data: &[u8]) -> std::io::Result<()>;
    /// Body data in a bytes object of the app's, which the sink may keep and
    /// send from later rather than copy.
    fn write_bytes(&mut self, chunk: &Bound<'_, PyBytes>) -> std::io::Result<()> {
        self.write(chunk.as_bytes())
    }
    /// The whole body is `count` bytes of the regular file `fd` from `offset`
    /// (wsgi.file_wrapper): send them with sendfile(2). `Ok(false)`: not done here,
    /// iterate instead. Called after `start`, before any `write`.
    fn sendfile(
        &mut self,
        _fd: std::os::fd::RawFd,
        _offset: u64,
        _count: u64,
    ) -> std::io::Result<bool> {
        Ok(false)
    }
    /// The client is not taking the body as fast as the app makes it: stop
    /// iterating for now ([`App::call`] returns [`Outcome::Paused`]).
    fn paused(&self) -> bool {
        false
    }
    /// The app may take its time before its next block (it streams: a generator,
    /// `write()`): what it gave so far goes to the client now, not when more
    /// comes. `Ok(false)`: no more body is wanted (a HEAD request): stop asking.
    /// An error means the client is gone.
    fn push(&mut self) -> std::io::Result<bool> {
        Ok(true)
    }
}

/// How a call ended.
pub enum Outcome {
    /// The response is complete (though perhaps not yet all sent).
    Done,
    /// The app's iterable has more to give; see [`App::resume`].
    Paused(Paused),
}

/// A response whose iterable is not exhausted. The worker serves other
/// connections until this one's client has taken what was sent, then calls
/// [`App::resume`]; a connection that ends first calls [`App::abandon`].
pub struct Paused {
    iter: Py<PyIterator>,
    result: Py<PyAny>,
    start: Py<StartResponse>,
    environ: Py<PyDict>,
    hook_req: Option<Py<PyAny>>,
}

#[derive(Debug)]
pub enum CallError {
    /// The app raised or broke the protocol; `traceback` is for the error log.
    App {
        traceback: String,
        headers_sent: bool,
    },
    /// The app raised SystemExit or KeyboardInterrupt: it asks the process to end.
    Exit { traceback: String },
    /// Writing to the client failed.
    Client(std::io::Error),
}

pub struct App {
    callable: Py<PyAny>,
    /// wsgi.file_wrapper's class and its "is this a regular file" helper, and
    /// whether sendfile(2) may be used (`--no-sendfile`, SENDFILE).
    file_wrapper: Py<PyAny>,
    regular_file: Py<PyAny>,
    sendfile: bool,
    environ: Environ,
    /// gunicorn.conf.py hooks, when it defines pre_request or post_request.
    hooks: Option<Hooks>,
    request_hooks: bool,
    /// The start_response of the last request, reused when nothing else holds it.
    start: Option<Reused>,
}

impl App {
    /// Import the app named by `spec` (gunicorn's forms).
    pub fn load(py: Python<'_>, spec: &str, multiprocess: bool) -> Result<App, AppLoadError> {
        // Before the app's import, which may `import ferricorn`.
        crate::input::register_module(py).map_err(|e| AppLoadError {
            message: format!("cannot register the ferricorn module: {e}"),
            detail: None,
        })?;
        let callable = loader::load(py, spec)?.unbind();
        let environ = Environ::new(py, multiprocess).map_err(|e| AppLoadError {
            message: format!("cannot prepare the WSGI environ: {e}"),
            detail: None,
        })?;
        let (file_wrapper, regular_file) = file_wrapper(py).map_err(|e| AppLoadError {
            message: format!("cannot set up wsgi.file_wrapper: {e}"),
            detail: None,
        })?;
        environ
            .set_file_wrapper(py, file_wrapper.bind(py))
            .map_err(|e| AppLoadError {
                message: e.to_string(),
                detail: None,
            })?;
        Ok(App {
            callable,
            environ,
            hooks: None,
            request_hooks: false,
            start: None,
            file_wrapper,
            regular_file,
            sendfile: true,
        })
    }

    /// `--no-sendfile` / SENDFILE: whether wsgi.file_wrapper may use sendfile(2).
    pub fn set_sendfile(&mut self, on: bool) {
        self.sendfile = on;
    }

    /// An app that answers every request with 500 and `message` (`--reload` when
    /// the real app does not load: the developer sees why in the browser).
    pub fn error_page(py: Python<'_>, message: &str) -> PyResult<App> {
        let code = c"def app(environ, start_response):\n    body = MESSAGE.encode('utf-8', 'replace')\n    start_response('500 Internal Server Error', [('Content-Type', 'text/plain; charset=utf-8'), ('Content-Length', str(len(body)))])\n    return [body]\n";
        let module = PyModule::from_code(
            py,
            code,
            c"<ferricorn error page>",
            c"_ferricorn_error_page",
        )?;
        module.setattr("MESSAGE", message)?;
        let (file_wrapper, regular_file) = file_wrapper(py)?;
        Ok(App {
            callable: module.getattr("app")?.unbind(),
            environ: Environ::new(py, false)?,
            hooks: None,
            request_hooks: false,
            start: None,
            file_wrapper,
            regular_file,
            sendfile: false,
        })
    }

    /// A second handle on the same app (a worker forked from a preloading master
    /// takes its own, with its own environ cache).
    pub fn clone_ref(&self, py: Python<'_>) -> PyResult<App> {
        let environ = Environ::new(py, self.environ.multiprocess())?;
        environ.set_file_wrapper(py, self.file_wrapper.bind(py))?;
        Ok(App {
            callable: self.callable.clone_ref(py),
            environ,
            hooks: None,
            request_hooks: false,
            start: None,
            file_wrapper: self.file_wrapper.clone_ref(py),
            regular_file: self.regular_file.clone_ref(py),
            sendfile: self.sendfile,
        })
    }

    /// `wsgi.multithread`: true when the worker runs several loops (`--threads`).
    pub fn set_multithread(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        self.environ.set_base(py, "wsgi.multithread", on)
    }

    /// Run these hooks around each request (pre_request, post_request).
    pub fn set_hooks(&mut self, py: Python<'_>, hooks: Hooks) {
        self.request_hooks = hooks.has(py, "pre_request") || hooks.has(py, "post_request");
        self.hooks = Some(hooks);
    }

    pub fn hooks(&self) -> Option<&Hooks> {
        self.hooks.as_ref()
    }

    /// Call the app and stream its response into `sink`, until the sink asks
    /// for a pause. `close()` of the returned iterable is called on every path
    /// (for a paused response, by [`resume`](Self::resume) or [`abandon`](Self::abandon)).
    pub fn call(
        &mut self,
        py: Python<'_>,
        req: &Request<'_>,
        sink: &mut dyn ResponseSink,
    ) -> Result<Outcome, CallError> {
        let (start, start_response) = match Reused::next(&mut self.start, py) {
            Ok(s) => s,
            Err(e) => return Err(self.app_error(py, e, false)),
        };
        let environ = match self.environ.build(py, req) {
            Ok(e) => e,
            Err(e) => return Err(self.app_error(py, e, false)),
        };
        let hook_req = match (&self.hooks, self.request_hooks) {
            (Some(h), true) => h
                .request(py, req.method, req.target, req.minor_version, req.headers)
                .ok(),
            _ => None,
        };
        if let (Some(h), Some(r)) = (&self.hooks, &hook_req) {
            h.pre_request(py, r);
        }
        // Lent for the call: what the app gives write() goes out before write()
        // returns.
        let lent = crate::current_sink::lend(sink);
        let called = self
            .callable
            .bind(py)
            .call1((environ.clone(), start_response));
        drop(lent);
        let result = match called {
            Ok(r) => r,
            Err(e) => {
                if let Some(gone) = start.borrow_mut().client_gone.take() {
                    return Err(CallError::Client(gone));
                }
                let sent = start.borrow().headers_sent;
                return Err(self.app_error(py, e, sent));
            }
        };
        // Ok(Some(iter)): paused, with `iter` to go on with.
        let outcome = match self.send_file(py, &result, &start, sink) {
            Ok(true) => Ok(None),
            // A list (what most apps return) is read in place, without an
            // iterator object; one is made only if the response pauses.
            Ok(false) => match result.cast_exact::<PyList>() {
                Ok(list) => match self.send_items(py, list.iter().map(Ok), &start, sink, false) {
                    Ok(Some(taken)) => self.list_iter_after(py, list, taken).map(Some),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                },
                Err(_) => match result.try_iter() {
                    Ok(iter) => self
                        .send_items(py, iter.clone(), &start, sink, streams(&result))
                        .map(|paused| paused.map(|_| iter)),
                    Err(e) => Err(self.app_error(py, e, false)),
                },
            },
            Err(e) => Err(e),
        };
        let outcome = match outcome {
            Ok(Some(iter)) => {
                return Ok(Outcome::Paused(Paused {
                    iter: iter.unbind(),
                    result: result.unbind(),
                    start: start.unbind(),
                    environ: environ.unbind(),
                    hook_req: hook_req.map(Bound::unbind),
                }))
            }
            other => other.map(drop),
        };
        self.end_call(py, &result, &start, &environ, hook_req.as_ref(), outcome)
    }

    /// Go on with a paused response, into `sink`, until it is done or the sink
    /// asks for another pause.
    pub fn resume(
        &mut self,
        py: Python<'_>,
        paused: Paused,
        sink: &mut dyn ResponseSink,
    ) -> Result<Outcome, CallError> {
        let start = paused.start.bind(py).clone();
        let iter = paused.iter.bind(py).clone();
        let streaming = streams(paused.result.bind(py));
        match self.send_items(py, iter, &start, sink, streaming) {
            Ok(Some(_)) => Ok(Outcome::Paused(paused)),
            done => self.end_paused(py, paused, done.map(drop)),
        }
    }

    /// A paused response whose connection ended: close() and post_request, as
    /// for any response.
    pub fn abandon(&mut self, py: Python<'_>, paused: Paused) {
        let gone = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        let _ = self.end_paused(py, paused, Err(CallError::Client(gone)));
    }

    fn end_paused(
        &mut self,
        py: Python<'_>,
        paused: Paused,
        outcome: Result<(), CallError>,
    ) -> Result<Outcome, CallError> {
        let hook_req = paused.hook_req.map(|r| r.into_bound(py));
        self.end_call(
            py,
            paused.result.bind(py),
            paused.start.bind(py),
            paused.environ.bind(py),
            hook_req.as_ref(),
            outcome,
        )
    }

    /// close() of the iterable, then post_request; the first error wins.
    fn end_call(
        &self,
        py: Python<'_>,
        result: &Bound<'_, PyAny>,
        start: &Bound<'_, StartResponse>,
        environ: &Bound<'_, PyDict>,
        hook_req: Option<&Bound<'_, PyAny>>,
        outcome: Result<(), CallError>,
    ) -> Result<Outcome, CallError> {
        // A list or tuple has no close(); asking would raise and discard an
        // AttributeError per request (before Python 3.13).
        let plain = result.is_exact_instance_of::<pyo3::types::PyList>()
            || result.is_exact_instance_of::<pyo3::types::PyTuple>();
        let close_result = if plain {
            Ok(())
        } else {
            match result.getattr_opt(pyo3::intern!(py, "close")) {
                Ok(Some(close)) => close.call0().map(drop),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            }
        };
        // As gunicorn: after the body and close().
        if let (Some(h), Some(r)) = (&self.hooks, hook_req) {
            let s = start.borrow();
            h.post_request(
                py,
                r,
                environ.as_any(),
                s.status.as_deref().unwrap_or_default(),
                s.headers(),
            );
        }
        let sent = start.borrow().headers_sent;
        match (outcome, close_result) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) => Err(self.app_error(py, e, sent)),
            (Ok(()), Ok(())) => Ok(Outcome::Done),
        }
    }

    /// wsgi.file_wrapper over a regular file, when sendfile(2) may be used:
    /// `Ok(true)` when the sink sends the file.
    fn send_file(
        &self,
        py: Python<'_>,
        result: &Bound<'_, PyAny>,
        start: &Bound<'_, StartResponse>,
        sink: &mut dyn ResponseSink,
    ) -> Result<bool, CallError> {
        if !self.sendfile || !result.get_type().is(self.file_wrapper.bind(py)) {
            return Ok(false);
        }
        let Ok(Some((fd, offset, count))) = self
            .regular_file
            .bind(py)
            .call1((result,))
            .and_then(|r| r.extract::<Option<(i32, u64, u64)>>())
        else {
            return Ok(false);
        };
        send_head(start, sink)?;
        sink.sendfile(fd, offset, count).map_err(CallError::Client)
    }

    /// Send the response's items until they end (`Ok(None)`) or the sink asks
    /// for a pause (`Ok(Some(n))`, after the n-th item). `streaming`: the items
    /// are made as they are asked for (not a list or tuple), so each is pushed to
    /// the client before the next is asked for, and `write()` may be called
    /// meanwhile.
    fn send_items<'py>(
        &self,
        py: Python<'py>,
        mut items: impl Iterator<Item = PyResult<Bound<'py, PyAny>>>,
        start: &Bound<'_, StartResponse>,
        sink: &mut dyn ResponseSink,
        streaming: bool,
    ) -> Result<Option<usize>, CallError> {
        for taken in 1.. {
            let item = if streaming {
                let _lent = crate::current_sink::lend(sink);
                let item = items.next();
                // A write() the app made meanwhile found the client gone.
                if let Some(gone) = start.borrow_mut().client_gone.take() {
                    return Err(CallError::Client(gone));
                }
                item
            } else {
                // A list's items run no Python, so no write() comes between them.
                items.next()
            };
            let Some(item) = item else { break };
            let sent = start.borrow().headers_sent;
            let item = item.map_err(|e| self.app_error(py, e, sent))?;
            let Ok(chunk) = item.cast::<PyBytes>() else {
                let msg = format!(
                    "the app's response iterable yielded {}, not bytes",
                    item.get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                );
                return Err(CallError::App {
                    traceback: msg,
                    headers_sent: sent,
                });
            };
            if chunk.as_bytes().is_empty() {
                continue;
            }
            send_head(start, sink)?;
            sink.write_bytes(chunk).map_err(CallError::Client)?;
            if sink.paused() {
                return Ok(Some(taken));
            }
            if streaming {
                if !sink.push().map_err(CallError::Client)? {
                    return Ok(None);
                }
                if sink.paused() {
                    return Ok(Some(taken));
                }
            }
        }
        send_head(start, sink)?;
        Ok(None)
    }

    /// An iterator over `list` past its first `taken` items, for a paused response.
    fn list_iter_after<'py>(
        &self,
        py: Python<'py>,
        list: &Bound<'py, PyList>,
        taken: usize,
    ) -> Result<Bound<'py, PyIterator>, CallError> {
        let iter = list.try_iter().map_err(|e| self.app_error(py, e, true))?;
        for _ in 0..taken {
            iter.clone().next();
        }
        Ok(iter)
    }

    fn app_error(&self, py: Python<'_>, err: PyErr, headers_sent: bool) -> CallError {
        let traceback = format_traceback(py, &err);
        if err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
            || err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
        {
            return CallError::Exit {
                traceback: traceback.trim_end().to_string(),
            };
        }
        CallError::App {
            traceback: traceback.trim_end().to_string(),
            headers_sent,
        }
    }
}

/// Send the status and headers once, followed by anything given to `write()`.
/// An iterable whose blocks are made as they are asked for: anything but a list
/// or a tuple, which the server holds in full.
fn streams(result: &Bound<'_, PyAny>) -> bool {
    !(result.is_exact_instance_of::<PyList>()
        || result.is_exact_instance_of::<pyo3::types::PyTuple>())
}

fn send_head(
    start: &Bound<'_, StartResponse>,
    sink: &mut dyn ResponseSink,
) -> Result<(), CallError> {
    let mut s = start.borrow_mut();
    if s.headers_sent {
        return Ok(());
    }
    if s.status.is_none() {
        return Err(CallError::App {
            traceback: "the app returned without calling start_response()".into(),
            headers_sent: false,
        });
    }
    s.send_head(sink).map_err(CallError::Client)
}

/// The full Python traceback of `err`. pyo3 keeps the traceback beside the
/// exception value (before 3.12 the value's `__traceback__` may be unset), so it is
/// passed explicitly: `format_exception(type, value, traceback)`. The traceback
/// module is imported at the first error, not at start: with what it imports,
/// it would cost every worker about 2 MiB.
pub(crate) fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    let tb = err
        .traceback(py)
        .map(|t| t.into_any())
        .unwrap_or_else(|| py.None().into_bound(py));
    py.import("traceback")
        .and_then(|m| m.getattr("format_exception"))
        .and_then(|f| f.call1((err.get_type(py), err.value(py), tb)))
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| lines.concat())
        .unwrap_or_else(|_| err.to_string())
}

/// wsgi.file_wrapper's class and the helper that recognises a regular file.
fn file_wrapper(py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
    let code = std::ffi::CString::new(include_str!("file_wrapper.py"))
        .expect("file_wrapper.py has no NUL byte");
    let module = PyModule::from_code(
        py,
        code.as_c_str(),
        c"<ferricorn file_wrapper>",
        c"_ferricorn_file_wrapper",
    )?;
    Ok((
        module.getattr("FileWrapper")?.unbind(),
        module.getattr("regular_file")?.unbind(),
    ))
}
