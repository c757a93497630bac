//! `wsgi.input`: the request body as a file-like object (PEP 3333 "Input and Error
//! Streams"). Reads never go past the body's end.
//!
//! A small body is complete before the app runs and is served from one `bytes`
//! object. A large one (or one the client sends only after `100 Continue`) is
//! read from the client while the app asks for it, through a [`BodySource`]; the
//! GIL is released while that waits, so other threads of the worker run.

use std::io;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

pyo3::create_exception!(
    ferricorn,
    ClientDisconnected,
    PyOSError,
    "The client closed the connection before the request body was complete."
);

/// Make `import ferricorn` give apps the exception they may want to catch by
/// name (`except ferricorn.ClientDisconnected`): on ferricorn's own package (the
/// launcher imported it, with its `_native`), or on a stand-in module. A module of
/// the app's own called `ferricorn` that is already imported is left alone.
pub fn register_module(py: Python<'_>) -> PyResult<()> {
    let modules = py.import("sys")?.getattr("modules")?;
    if let Ok(existing) = modules.get_item("ferricorn") {
        if existing.hasattr("_native")? {
            existing.setattr("ClientDisconnected", py.get_type::<ClientDisconnected>())?;
        }
        return Ok(());
    }
    let module = pyo3::types::PyModule::new(py, "ferricorn")?;
    module.add("ClientDisconnected", py.get_type::<ClientDisconnected>())?;
    module.add(
        "__doc__",
        "The ferricorn WSGI server, as the apps it serves see it.",
    )?;
    modules.set_item("ferricorn", module)
}

/// A request body arriving from the client. Blocking: it waits for the client
/// (up to the body timeout) and sends `100 Continue` first when the client asked.
pub trait BodySource: Send {
    /// Append up to `max` (> 0) bytes of body to `out`; `Ok(0)` at the body's end.
    fn read(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<usize>;
}

pub type SharedSource = Arc<Mutex<dyn BodySource>>;

/// The body as the app sees it.
pub enum Body<'a> {
    /// Complete before the app runs.
    Bytes(&'a [u8]),
    /// Read from the client as the app asks.
    Stream(SharedSource),
}

/// How much to ask a stream for at once when the app asks for "everything" or a line.
const STREAM_STEP: usize = 64 * 1024;

enum Source {
    Bytes(Py<PyBytes>),
    Stream { src: SharedSource, eof: bool },
}

#[pyclass(module = "ferricorn", name = "Input")]
pub struct Input {
    source: Source,
    /// Stream: bytes received and not yet handed to the app (from `pos`).
    /// Bytes: unused.
    buf: Vec<u8>,
    pos: usize,
}

impl Input {
    pub fn new(py: Python<'_>, body: &Body<'_>) -> Input {
        let source = match body {
            Body::Bytes(b) => Source::Bytes(PyBytes::new(py, b).unbind()),
            Body::Stream(src) => Source::Stream {
                src: Arc::clone(src),
                eof: false,
            },
        };
        Input {
            source,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Ready for another request's body, keeping the allocations (but not a
    /// large stream buffer).
    pub fn reset(&mut self, py: Python<'_>, body: &Body<'_>) {
        let Input { source, buf, .. } = Input::new(py, body);
        self.source = source;
        self.pos = 0;
        if self.buf.capacity() > STREAM_STEP {
            self.buf = buf;
        } else {
            self.buf.clear();
        }
    }

    /// The bytes available without waiting, from the read position.
    fn available<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        match &self.source {
            Source::Bytes(b) => {
                let data = b.as_bytes(py);
                &data[self.pos.min(data.len())..]
            }
            Source::Stream { .. } => &self.buf[self.pos..],
        }
    }

    /// For a stream: wait until `want` bytes are buffered or the body ends.
    fn fill(&mut self, py: Python<'_>, want: usize) -> PyResult<()> {
        while !self.at_end() && self.available(py).len() < want {
            self.fill_some(py, want)?;
        }
        Ok(())
    }

    /// For a stream: one wait for more bytes (up to what `want` still lacks).
    fn fill_some(&mut self, py: Python<'_>, want: usize) -> PyResult<()> {
        let Source::Stream { src, eof } = &mut self.source else {
            return Ok(());
        };
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        if !*eof && self.buf.len() - self.pos < want {
            let need = (want - (self.buf.len() - self.pos)).min(STREAM_STEP);
            let buf = &mut self.buf;
            let n = py
                .detach(|| {
                    let mut s = src.lock().unwrap_or_else(|e| e.into_inner());
                    s.read(buf, need)
                })
                .map_err(read_error)?;
            *eof = n == 0;
        }
        Ok(())
    }

    /// Wait for a whole line (up to `limit` bytes) or the body's end.
    fn fill_line(&mut self, py: Python<'_>, limit: usize) -> PyResult<usize> {
        let mut scanned = 0;
        loop {
            let avail = self.available(py);
            let window = &avail[..avail.len().min(limit)];
            if let Some(i) = window[scanned..].iter().position(|&b| b == b'\n') {
                return Ok(scanned + i + 1);
            }
            scanned = window.len();
            if window.len() == limit || self.at_end() {
                return Ok(window.len());
            }
            let want = (avail.len() + STREAM_STEP).min(limit);
            self.fill_some(py, want)?;
        }
    }

    fn at_end(&self) -> bool {
        match &self.source {
            Source::Bytes(_) => true,
            Source::Stream { eof, .. } => *eof,
        }
    }

    /// Hand `n` available bytes to the app.
    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        if let Source::Bytes(b) = &self.source {
            let whole = b.bind(py);
            if self.pos == 0 && n == whole.as_bytes().len() {
                self.pos = n;
                return whole.clone(); // the whole body: no copy
            }
        }
        let avail = self.available(py);
        let n = n.min(avail.len());
        let out = PyBytes::new(py, &avail[..n]);
        self.pos += n;
        out
    }

    fn read_upto<'py>(&mut self, py: Python<'py>, size: usize) -> PyResult<Bound<'py, PyBytes>> {
        if size == usize::MAX {
            // Everything: one step at a time, so memory grows with the body only.
            while !self.at_end() {
                let have = self.available(py).len();
                self.fill(py, have.saturating_add(STREAM_STEP))?;
            }
        } else {
            self.fill(py, size)?;
        }
        let n = size.min(self.available(py).len());
        Ok(self.take(py, n))
    }
}

/// What the app sees when the client fails it mid-body.
fn read_error(e: io::Error) -> PyErr {
    match e.kind() {
        io::ErrorKind::TimedOut => PyTimeoutError::new_err(e.to_string()),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            ClientDisconnected::new_err(e.to_string())
        }
        io::ErrorKind::InvalidData => PyValueError::new_err(e.to_string()),
        _ => PyOSError::new_err(e.to_string()),
    }
}

/// `None` or a negative size means "all".
fn size_limit(size: Option<isize>) -> usize {
    match size {
        Some(n) if n >= 0 => n as usize,
        _ => usize::MAX,
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.read_upto(py, size_limit(size))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let n = self.fill_line(py, size_limit(size))?;
        Ok(self.take(py, n))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_limit(hint);
        let lines = PyList::empty(py);
        let mut total = 0usize;
        while hint == 0 || total < hint {
            let n = self.fill_line(py, usize::MAX)?;
            if n == 0 {
                break;
            }
            total += n;
            lines.append(self.take(py, n))?;
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let n = self.fill_line(py, usize::MAX)?;
        Ok((n > 0).then(|| self.take(py, n)))
    }
}
