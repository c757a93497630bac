//! The `start_response` callable (PEP 3333 "The start_response() Callable").
//!
//! It validates and records the status and headers; the worker sends them only
//! when the first non-empty body chunk is ready (or the body ends), so an app may
//! still replace them by calling it again with `exc_info` until then.

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;

use crate::app::ResponseSink;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::PyTraverseError;

/// Hop-by-hop headers belong to the server (RFC 9110 §7.6.1); an app must not set
/// them (PEP 3333): a 500 names the header. `Connection: close` from the app is
/// honoured rather than refused, as gunicorn does.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

#[pyclass(module = "ferricorn", name = "StartResponse")]
#[derive(Default)]
pub struct StartResponse {
    pub status: Option<Vec<u8>>,
    /// The headers given; entries past `header_count` are spare allocations.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    header_count: usize,
    /// Allocations from an earlier request, filled by the next call.
    spare: Vec<(Vec<u8>, Vec<u8>)>,
    spare_status: Vec<u8>,
    /// The app asked for `Connection: close`.
    pub close: bool,
    /// Set by the server once the head went out; later calls need exc_info and re-raise it.
    pub headers_sent: bool,
    /// Data given to the legacy `write()` callable outside the app's call (another
    /// thread), sent before the iterable's.
    pub written: Vec<u8>,
    /// `write()` found the client gone: the app's error that follows is that.
    pub client_gone: Option<std::io::Error>,
    /// This object's bound `write`, which start_response returns: made once. It
    /// refers back to the object; `Reused::next` breaks that cycle when it lets
    /// the object go.
    write: Option<Py<PyAny>>,
}

/// A start_response kept from one request to the next, while the app keeps
/// nothing of it: a new object and two bound methods per request show in
/// profiles.
pub struct Reused {
    object: Py<StartResponse>,
    /// The bound `start_response` method the app is called with.
    call: Py<PyAny>,
}

impl Reused {
    /// The start_response for the next request, and the callable to give the app:
    /// the last one, reset, when nothing but itself refers to it any more.
    pub fn next<'py>(
        slot: &mut Option<Reused>,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, StartResponse>, Bound<'py, PyAny>)> {
        if let Some(last) = slot.take() {
            let object = last.object.into_bound(py);
            let call = last.call.into_bound(py);
            // Held by `last`, by `call` and by `write` (each bound to it), and by
            // nothing else; each method by the object alone.
            #[allow(deprecated)] // The replacement is an unsafe ffi call; this read is all we need.
            let only_ours = object.get_refcnt() == 3
                && call.get_refcnt() == 1
                && object
                    .borrow()
                    .write
                    .as_ref()
                    .is_some_and(|w| w.get_refcnt(py) == 1);
            if only_ours {
                object.borrow_mut().reset();
                *slot = Some(Reused {
                    object: object.clone().unbind(),
                    call: call.clone().unbind(),
                });
                return Ok((object, call));
            }
            // The app kept some of it: let it go, without the cycle.
            if let Ok(mut kept) = object.try_borrow_mut() {
                kept.write = None;
            }
        }
        let object = Bound::new(py, StartResponse::default())?;
        let write = object.getattr(pyo3::intern!(py, "write"))?;
        object.borrow_mut().write = Some(write.unbind());
        let call = object.getattr(pyo3::intern!(py, "start_response"))?;
        *slot = Some(Reused {
            object: object.clone().unbind(),
            call: call.clone().unbind(),
        });
        Ok((object, call))
    }
}

impl StartResponse {
    pub fn headers(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.headers[..self.header_count]
    }

    /// Ready for another request, keeping the allocations.
    pub fn reset(&mut self) {
        if let Some(status) = self.status.take() {
            self.spare_status = status;
        }
        self.header_count = 0;
        self.close = false;
        self.headers_sent = false;
        self.written.clear();
        self.client_gone = None;
    }
}

#[pymethods]
impl StartResponse {
    /// Given to the app as a bound method (a vectorcall: no argument tuple).
    #[pyo3(signature = (status, response_headers, exc_info=None))]
    fn start_response<'py>(
        slf: Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        response_headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let this = slf.borrow();
            if let Some(info) = exc_info {
                if this.headers_sent {
                    // PEP 3333: re-raise the app's exception; the response cannot change now.
                    let info = info.cast::<PyTuple>()?;
                    let value = info.get_item(1)?;
                    let tb = info.get_item(2)?;
                    return Err(PyErr::from_value(
                        value.call_method1("with_traceback", (tb,))?,
                    ));
                }
            } else if this.status.is_some() {
                return Err(PyRuntimeError::new_err(
                    "start_response() called a second time without exc_info",
                ));
            }
        }
        // Filled in last request's allocations; the current status and headers
        // stay as they are if these turn out invalid.
        let (mut status_bytes, mut fresh) = {
            let mut this = slf.borrow_mut();
            (
                std::mem::take(&mut this.spare_status),
                std::mem::take(&mut this.spare),
            )
        };
        let filled = validate_status(status, &mut status_bytes)
            .and_then(|()| read_headers(response_headers, &mut fresh));
        let mut this = slf.borrow_mut();
        let (count, close) = match filled {
            Ok(got) => got,
            Err(e) => {
                this.spare_status = status_bytes;
                this.spare = fresh;
                return Err(e);
            }
        };
        this.spare = std::mem::replace(&mut this.headers, fresh);
        this.header_count = count;
        if let Some(old) = this.status.replace(status_bytes) {
            this.spare_status = old;
        }
        this.close = close;
        if let Some(write) = &this.write {
            return Ok(write.bind(slf.py()).clone());
        }
        drop(this);
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    /// The cycle through `write` is collectable: an object dropped while its
    /// cycle is whole (its app's handle let go) is not leaked.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.write)
    }

    fn __clear__(&mut self) {
        self.write = None;
    }

    /// The legacy write() callable returned by start_response. Inside the app's
    /// call the data reaches the client before write() returns (PEP 3333).
    fn write(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() argument must be bytes"))?;
        if self.status.is_none() {
            return Err(PyRuntimeError::new_err(
                "write() called before start_response()",
            ));
        }
        let sent = crate::current_sink::with(|sink| {
            self.send_head(sink)?;
            if !data.as_bytes().is_empty() {
                sink.write_bytes(data)?;
                sink.push()?;
            }
            Ok::<(), std::io::Error>(())
        });
        match sent {
            None => {
                self.written.extend_from_slice(data.as_bytes());
                Ok(())
            }
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => {
                let message = e.to_string();
                self.client_gone = Some(e);
                Err(crate::input::ClientDisconnected::new_err(message))
            }
        }
    }
}

impl StartResponse {
    /// The head (once), then what write() kept for it (from outside the call).
    pub(crate) fn send_head(&mut self, sink: &mut dyn ResponseSink) -> std::io::Result<()> {
        if self.headers_sent {
            return Ok(());
        }
        let Some(status) = self.status.as_deref() else {
            return Ok(());
        };
        sink.start(status, &self.headers[..self.header_count], self.close);
        self.headers_sent = true;
        if !self.written.is_empty() {
            let written = std::mem::take(&mut self.written);
            sink.write(&written)?;
        }
        Ok(())
    }
}

/// Validate the app's headers into `out`'s first entries (reusing them), leaving
/// out `Connection`; returns how many were taken, and whether the app asked for
/// `Connection: close`.
fn read_headers(
    response_headers: &Bound<'_, PyAny>,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> PyResult<(usize, bool)> {
    // A list (nearly always) is read in place, without an iterator object.
    if let Ok(list) = response_headers.cast::<PyList>() {
        return read_header_items(list.iter().map(Ok), out);
    }
    read_header_items(response_headers.try_iter()?, out)
}

fn read_header_items<'py>(
    items: impl Iterator<Item = PyResult<Bound<'py, PyAny>>>,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> PyResult<(usize, bool)> {
    let mut count = 0;
    let mut close = false;
    for item in items {
        let item = item?;
        let pair = item.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err("each response header must be a (name, value) tuple of str")
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "each response header must be a (name, value) tuple of str",
            ));
        }
        if out.len() == count {
            out.push(Default::default());
        }
        let (name, value) = &mut out[count];
        latin1(&pair.get_item(0)?, "response header name", name)?;
        latin1(&pair.get_item(1)?, "response header value", value)?;
        validate_name(name)?;
        validate_value(name, value)?;
        if name.eq_ignore_ascii_case(b"connection") {
            // Tolerated, as gunicorn does, because apps use it to ask for a close.
            close |= String::from_utf8_lossy(value)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
            continue;
        }
        if HOP_BY_HOP
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        {
            // PEP 3333: hop-by-hop headers are the server's; framing headers from
            // the app would corrupt the response.
            return Err(PyValueError::new_err(format!(
                "the app set the hop-by-hop header {:?}, which belongs to the server (PEP 3333)",
                String::from_utf8_lossy(name)
            )));
        }
        count += 1;
    }
    Ok((count, close))
}

/// Encode a native string as latin-1 bytes (PEP 3333 "Unicode Issues"), into
/// `out` (cleared first).
fn latin1(s: &Bound<'_, PyAny>, what: &str, out: &mut Vec<u8>) -> PyResult<()> {
    out.clear();
    let s = s
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a str")))?;
    let text = s.to_cow()?;
    if text.is_ascii() {
        out.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    for c in text.chars() {
        let b = u8::try_from(u32::from(c))
            .map_err(|_| PyValueError::new_err(format!("{what} {text:?} is not latin-1")))?;
        out.push(b);
    }
    Ok(())
}

/// The status as latin-1 bytes, into `bytes`, if it has the form `NNN Reason`.
fn validate_status(status: &Bound<'_, PyAny>, bytes: &mut Vec<u8>) -> PyResult<()> {
    latin1(status, "status", bytes)?;
    let ok = bytes.len() >= 4
        && bytes[..3].iter().all(u8::is_ascii_digit)
        && bytes[3] == b' '
        && !bytes.iter().any(|&b| b < 0x20 || b == 0x7f);
    if !ok {
        return Err(PyValueError::new_err(format!(
            "invalid status {:?}: expected \"NNN Reason\"",
            String::from_utf8_lossy(bytes)
        )));
    }
    Ok(())
}

fn validate_name(name: &[u8]) -> PyResult<()> {
    if name.is_empty() || !name.iter().all(|&b| ferricorn_http::is_tchar(b)) {
        return Err(PyValueError::new_err(format!(
            "invalid response header name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

fn validate_value(name: &[u8], value: &[u8]) -> PyResult<()> {
    // CR, LF or NUL would let the app's data inject headers or a second response.
    if ferricorn_http::has_ctl(value) {
        return Err(PyValueError::new_err(format!(
            "response header {:?} has a control character (CR, LF or NUL) in its value",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}
