//! Building the PEP 3333 `environ` dict for one request.
//!
//! Constant entries live in a base dict that is copied per request; header keys
//! (`HTTP_USER_AGENT`, …) are made once and reused, since building key strings is
//! a measurable share of a fast server's time per request.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::app::Request;
use crate::input::Input;

/// At most this many distinct header keys are cached (clients choose header names).
const MAX_CACHED_KEYS: usize = 512;

pub struct Environ {
    multiprocess: bool,
    base: Py<PyDict>,
    keys: HashMap<Vec<u8>, Py<PyString>>,
    scratch: Vec<u8>,
}

impl Environ {
    pub fn new(py: Python<'_>, multiprocess: bool) -> PyResult<Environ> {
        let base = PyDict::new(py);
        base.set_item("wsgi.version", (1, 0))?;
        base.set_item("wsgi.url_scheme", "http")?;
        base.set_item("wsgi.errors", py.import("sys")?.getattr("stderr")?)?;
        base.set_item("wsgi.multithread", false)?;
        base.set_item("wsgi.multiprocess", multiprocess)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item(
            "SERVER_SOFTWARE",
            concat!("ferricorn/", env!("CARGO_PKG_VERSION")),
        )?;
        base.set_item("SCRIPT_NAME", "")?;
        // Keys every request sets, present in the copy already: setting them then
        // replaces a value instead of growing (and rebuilding) the copy's table.
        for key in [
            "REQUEST_METHOD",
            "PATH_INFO",
            "QUERY_STRING",
            "RAW_URI",
            "SERVER_PROTOCOL",
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "SERVER_NAME",
            "SERVER_PORT",
            "wsgi.input",
        ] {
            base.set_item(pyo3::types::PyString::intern(py, key), py.None())?;
        }
        Ok(Environ {
            multiprocess,
            base: base.unbind(),
            keys: HashMap::new(),
            scratch: Vec::with_capacity(64),
        })
    }

    /// `wsgi.file_wrapper`: the class apps wrap files in.
    pub fn set_file_wrapper(&self, py: Python<'_>, class: &Bound<'_, PyAny>) -> PyResult<()> {
        self.base.bind(py).set_item("wsgi.file_wrapper", class)
    }

    /// Change a constant entry (e.g. `wsgi.multithread` with `--threads`).
    pub fn set_base(&self, py: Python<'_>, key: &str, value: bool) -> PyResult<()> {
        self.base.bind(py).set_item(key, value)
    }

    pub fn multiprocess(&self) -> bool {
        self.multiprocess
    }

    pub fn build<'py>(
        &mut self,
        py: Python<'py>,
        req: &Request<'_>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let env = self.base.bind(py).copy()?;
        let (path, query) = split_target(req.target);
        env.set_item(pyo3::intern!(py, "REQUEST_METHOD"), latin1(py, req.method)?)?;
        env.set_item(
            pyo3::intern!(py, "PATH_INFO"),
            latin1(py, &percent_decode(path))?,
        )?;
        env.set_item(pyo3::intern!(py, "QUERY_STRING"), latin1(py, query)?)?;
        env.set_item(pyo3::intern!(py, "RAW_URI"), latin1(py, req.target)?)?;
        env.set_item(
            pyo3::intern!(py, "SERVER_PROTOCOL"),
            if req.minor_version == 0 {
                pyo3::intern!(py, "HTTP/1.0")
            } else {
                pyo3::intern!(py, "HTTP/1.1")
            },
        )?;
        if req.url_scheme != "http" {
            env.set_item(pyo3::intern!(py, "wsgi.url_scheme"), req.url_scheme)?;
        }
        let mut digits = [0u8; 40];
        env.set_item(
            pyo3::intern!(py, "REMOTE_ADDR"),
            PyString::new(py, ip_text(req.peer.ip(), &mut digits)),
        )?;
        let mut port = itoa::Buffer::new();
        env.set_item(
            pyo3::intern!(py, "REMOTE_PORT"),
            PyString::new(py, port.format(req.peer.port())),
        )?;

        let mut host = None;
        for &(name, value) in req.headers {
            // Names with `_` are dropped, as gunicorn does: a client could otherwise
            // send `X_Forwarded_For` and collide with the key of `X-Forwarded-For`.
            if name.contains(&b'_') {
                continue;
            }
            if name.eq_ignore_ascii_case(b"host") {
                host = Some(value);
            }
            let key = self.key(py, name);
            let value = latin1(py, value)?;
            match env.get_item(&key)? {
                Some(prev) => {
                    let sep = if name.eq_ignore_ascii_case(b"cookie") {
                        "; "
                    } else {
                        ","
                    };
                    let joined = format!(
                        "{}{sep}{}",
                        prev.cast::<PyString>()?.to_cow()?,
                        value.to_cow()?
                    );
                    env.set_item(key, joined)?;
                }
                None => env.set_item(key, value)?,
            }
        }
        let (server_name, server_port) = match host.filter(|h| !h.is_empty()) {
            Some(h) => {
                let (name, port) = split_host(h);
                (latin1(py, name)?, latin1(py, port)?)
            }
            None => (
                PyString::new(py, ip_text(req.local.ip(), &mut digits)),
                PyString::new(py, port.format(req.local.port())),
            ),
        };
        env.set_item(pyo3::intern!(py, "SERVER_NAME"), server_name)?;
        env.set_item(pyo3::intern!(py, "SERVER_PORT"), server_port)?;
        env.set_item(
            pyo3::intern!(py, "wsgi.input"),
            Bound::new(py, Input::new(py, &req.body))?,
        )?;
        Ok(env)
    }

    fn key<'py>(&mut self, py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
        self.scratch.clear();
        self.scratch.extend(name.iter().map(u8::to_ascii_lowercase));
        if let Some(k) = self.keys.get(&self.scratch) {
            return k.bind(py).clone();
        }
        let key = match self.scratch.as_slice() {
            b"content-type" => "CONTENT_TYPE".to_string(),
            b"content-length" => "CONTENT_LENGTH".to_string(),
            other => {
                let mut k = String::with_capacity(5 + other.len());
                k.push_str("HTTP_");
                k.extend(other.iter().map(|&b| {
                    if b == b'-' {
                        '_'
                    } else {
                        b.to_ascii_uppercase() as char
                    }
                }));
                k
            }
        };
        let key = PyString::intern(py, &key);
        if self.keys.len() < MAX_CACHED_KEYS {
            self.keys.insert(self.scratch.clone(), key.clone().unbind());
        }
        key
    }
}

/// An address as text without the formatting machinery (it shows in profiles
/// at ~100k requests/s); IPv6 takes the standard library's path.
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 40]) -> &str {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let mut d = itoa::Buffer::new();
                let s = d.format(octet);
                buf[len..len + s.len()].copy_from_slice(s.as_bytes());
                len += s.len();
            }
            std::str::from_utf8(&buf[..len]).unwrap_or_default()
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{v6}");
            let len = cursor.position() as usize;
            std::str::from_utf8(&buf[..len]).unwrap_or_default()
        }
    }
}

/// A native string from bytes, decoded as latin-1 (PEP 3333: environ values are
/// native strings holding the bytes as sent). CPython's own latin-1 decoder
/// copies the bytes as they are; `PyString::new` would validate and decode UTF-8.
#[allow(unsafe_code)]
fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len = pyo3::ffi::Py_ssize_t::try_from(bytes.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("value too long"))?;
    // SAFETY: `bytes` is a live slice of `len` bytes, `py` proves the thread is
    // attached, and a NULL errors argument means "strict" (latin-1 cannot fail
    // but for memory). The result is a new reference, or NULL with an exception set.
    unsafe {
        let s = pyo3::ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null());
        Ok(Bound::from_owned_ptr_or_err(py, s)?.cast_into_unchecked())
    }
}

/// Path and query of a request-target (origin-form, absolute-form or `*`).
fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    let mut rest = target;
    if !rest.starts_with(b"/") && rest != b"*" {
        // absolute-form: drop `scheme://authority`.
        if let Some(i) = rest.windows(3).position(|w| w == b"://") {
            let after = &rest[i + 3..];
            rest = after
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .map_or(&b""[..], |j| &after[j..]);
        }
    }
    let rest = rest
        .iter()
        .position(|&b| b == b'#')
        .map_or(rest, |i| &rest[..i]);
    match rest.iter().position(|&b| b == b'?') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    }
}

/// `%XX` → byte; malformed escapes are kept as they are.
fn percent_decode(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// SERVER_NAME and SERVER_PORT from the Host header, else the listening address.
/// SERVER_NAME and SERVER_PORT from a Host header (`name`, `name:port`,
/// `[v6]:port`); the port is 80 when the header names none.
fn split_host(host: &[u8]) -> (&[u8], &[u8]) {
    if let Some(rest) = host.strip_prefix(b"[") {
        if let Some(i) = rest.iter().position(|&b| b == b']') {
            let port = rest[i + 1..]
                .strip_prefix(b":")
                .filter(|p| !p.is_empty())
                .unwrap_or(b"80");
            return (&rest[..i], port);
        }
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host[..i].contains(&b':') => (&host[..i], &host[i + 1..]),
        _ => (host, b"80"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_text() {
        let mut b = [0u8; 40];
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.255.9",
            "::1",
            "2001:db8::ff00:42:8329",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(parsed, &mut b), ip);
        }
    }

    #[test]
    fn targets() {
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"/", b"/", b""),
            (b"/a/b?x=1&y=2", b"/a/b", b"x=1&y=2"),
            (b"/a?", b"/a", b""),
            (b"/a#frag", b"/a", b""),
            (b"http://example.com/p?q", b"/p", b"q"),
            (b"http://example.com", b"", b""),
            (b"*", b"*", b""),
        ];
        for (t, p, q) in cases {
            assert_eq!(
                split_target(t),
                (*p, *q),
                "{:?}",
                String::from_utf8_lossy(t)
            );
        }
    }

    #[test]
    fn percent() {
        assert_eq!(&*percent_decode(b"/a%20b"), b"/a b");
        assert_eq!(
            &*percent_decode(b"/%E2%82%AC"),
            &[b'/', 0xe2, 0x82, 0xac][..]
        );
        // Malformed escapes stay as sent.
        assert_eq!(&*percent_decode(b"/%zz%4"), b"/%zz%4");
        assert_eq!(&*percent_decode(b"%41"), b"A");
    }

    #[test]
    fn host_header() {
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"example.com:8080", b"example.com", b"8080"),
            (b"example.com", b"example.com", b"80"),
            (b"[::1]:9", b"::1", b"9"),
            (b"[::1]", b"::1", b"80"),
            (b"::1", b"::1", b"80"),
        ];
        for &(host, name, port) in cases {
            assert_eq!(split_host(host), (name, port), "{host:?}");
        }
    }
}
