//! Building the PEP 3333 `environ` dict for one request.
//!
//! Constant entries live in a base dict that is copied per request; header keys
//! (`HTTP_USER_AGENT`, …) are made once and reused, since building key strings is
//! a measurable share of a fast server's time per request. So are values that
//! repeat from one request to the next (a keep-alive client sends the same Host,
//! User-Agent and Accept each time): `str` is immutable, so one object can serve
//! every environ that holds those bytes. The entries every request has (method,
//! path, query, protocol, client address, server name and port) are kept in the
//! base dict as the last request gave them, so a request that repeats them finds
//! them in its copy already: each `PyDict_SetItem` costs some 190 instructions.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::addr::Local;
use crate::app::Request;
use crate::input::{Body, Input};

/// At most this many distinct header keys are cached (clients choose header names).
const MAX_CACHED_KEYS: usize = 512;
/// Values longer than this (cookies, tokens) are not kept for reuse: they rarely
/// repeat, and the cache's memory stays under 512 × 256 bytes of copies.
const MAX_REUSED_LEN: usize = 256;
/// Places in a request's header list whose name is remembered (`Environ::order`).
const ORDER_PLACES: usize = 64;
/// Slots of the REMOTE_PORT cache: one per recent connection, by port.
const PORT_SLOTS: usize = 64;

pub struct Environ {
    multiprocess: bool,
    /// The entries every environ starts with: constants, and the `Repeated` ones
    /// as the last request set them.
    base: Py<PyDict>,
    /// Header keys by lower-cased name: indexes into `entries`.
    keys: HashMap<Vec<u8>, usize>,
    entries: Vec<HeaderKey>,
    /// The last request's header names as sent, in order, with their entries: a
    /// client sends the same headers in the same order each time, so a header is
    /// found by comparing its name with the one at its place last time, without
    /// lower-casing and hashing it. `usize::MAX`: no header was seen at that place.
    order: Vec<(Vec<u8>, usize)>,
    scratch: Vec<u8>,
    /// Numbers the requests, so a header key knows whether this request set it.
    request: u64,
    method: Repeated,
    path: Repeated,
    query: Repeated,
    raw_uri: Repeated,
    protocol: Repeated,
    remote_addr: Repeated,
    server_name: Repeated,
    server_port: Repeated,
    /// REMOTE_PORT texts of recent connections, by port.
    remote_ports: Vec<Option<(u16, Py<PyString>)>>,
    /// The last request's wsgi.input, reset for the next one when nothing else
    /// holds it (the body it refers to is let go then).
    input: Option<Py<Input>>,
}

/// An entry of the base dict that every request sets, with the text it holds
/// there (absent until set, after a value too long to keep, or after an error).
struct Repeated {
    key: &'static str,
    last: LastText,
}

impl Repeated {
    fn new(key: &'static str) -> Repeated {
        Repeated {
            key,
            last: LastText::default(),
        }
    }

    /// Have the base hold the text of `bytes` (made by `make` when they differ
    /// from the last request's).
    fn put<'py>(
        &mut self,
        py: Python<'py>,
        base: &Bound<'py, PyDict>,
        bytes: &[u8],
        make: impl FnOnce(Python<'py>, &[u8]) -> PyResult<Bound<'py, PyString>>,
    ) -> PyResult<()> {
        if self.last.holding(bytes).is_some() {
            return Ok(());
        }
        self.last.text = None;
        let text = make(py, bytes)?;
        base.set_item(PyString::intern(py, self.key), &text)?;
        self.last.remember(bytes, &text);
        Ok(())
    }
}

/// An environ key made from a header name, and the last value it was given.
struct HeaderKey {
    key: Py<PyString>,
    value: LastText,
    /// The `request` that last set it: a second header of the same name in one
    /// request is joined to the first.
    set_by: u64,
}

/// The text made from some bytes last time, handed out again while the bytes
/// are the same.
#[derive(Default)]
struct LastText {
    bytes: Vec<u8>,
    text: Option<Py<PyString>>,
}

impl LastText {
    /// The text of `bytes`: the last one if they repeat, else `make(bytes)`.
    fn get<'py>(
        &mut self,
        py: Python<'py>,
        bytes: &[u8],
        make: impl FnOnce(Python<'py>, &[u8]) -> PyResult<Bound<'py, PyString>>,
    ) -> PyResult<Bound<'py, PyString>> {
        if let Some(text) = self.holding(bytes) {
            return Ok(text.bind(py).clone());
        }
        let text = make(py, bytes)?;
        self.remember(bytes, &text);
        Ok(text)
    }

    /// The text kept, if it was made from `bytes`.
    fn holding(&self, bytes: &[u8]) -> Option<&Py<PyString>> {
        self.text.as_ref().filter(|_| self.bytes == bytes)
    }

    /// Keep `text` as made from `bytes`, unless they are too long to be worth it
    /// (then nothing is kept).
    fn remember(&mut self, bytes: &[u8], text: &Bound<'_, PyString>) {
        if bytes.len() > MAX_REUSED_LEN {
            self.text = None;
            return;
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.text = Some(text.clone().unbind());
    }
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
        // Keys every request sets, present in the copy already: setting one then
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
            entries: Vec::new(),
            order: Vec::new(),
            scratch: Vec::with_capacity(64),
            request: 0,
            method: Repeated::new("REQUEST_METHOD"),
            path: Repeated::new("PATH_INFO"),
            query: Repeated::new("QUERY_STRING"),
            raw_uri: Repeated::new("RAW_URI"),
            protocol: Repeated::new("SERVER_PROTOCOL"),
            remote_addr: Repeated::new("REMOTE_ADDR"),
            server_name: Repeated::new("SERVER_NAME"),
            server_port: Repeated::new("SERVER_PORT"),
            remote_ports: (0..PORT_SLOTS).map(|_| None).collect(),
            input: None,
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
        self.request += 1;
        let base = self.base.bind(py).clone();
        let (path, query) = split_target(req.target);
        self.method.put(py, &base, req.method, latin1)?;
        self.path.put(py, &base, path, |py, path| {
            latin1(py, &percent_decode(path))
        })?;
        self.query.put(py, &base, query, latin1)?;
        self.raw_uri.put(py, &base, req.target, latin1)?;
        let protocol: &[u8] = if req.minor_version == 0 {
            b"HTTP/1.0"
        } else {
            b"HTTP/1.1"
        };
        self.protocol.put(py, &base, protocol, latin1)?;
        let mut digits = [0u8; 40];
        // A unix peer has no address: "", as gunicorn gives it.
        let peer = req.peer.ip();
        let key = peer.map_or([0; 17], ip_key);
        self.remote_addr.put(py, &base, &key, |py, _| match peer {
            Some(ip) => latin1(py, ip_text(ip, &mut digits).as_bytes()),
            None => latin1(py, b""),
        })?;
        // The last Host (the parser refuses a request with two).
        let host = req
            .headers
            .iter()
            .rev()
            .find(|(name, _)| name.eq_ignore_ascii_case(b"host"))
            .map(|&(_, value)| value)
            .filter(|h| !h.is_empty());
        let mut port = itoa::Buffer::new();
        let (server_name, server_port) = match (host, req.local) {
            (Some(h), _) => split_host(h),
            (None, Local::Ip(local)) => (
                ip_text(local.ip(), &mut digits).as_bytes(),
                port.format(local.port()).as_bytes(),
            ),
            (None, Local::Unix(path)) => (path.as_bytes(), &b""[..]),
        };
        self.server_name.put(py, &base, server_name, latin1)?;
        self.server_port.put(py, &base, server_port, latin1)?;

        let env = base.copy()?;
        if req.url_scheme != "http" {
            env.set_item(pyo3::intern!(py, "wsgi.url_scheme"), req.url_scheme)?;
        }
        match req.peer.port() {
            Some(port) => {
                let remote_port = self.remote_port(py, port)?;
                env.set_item(pyo3::intern!(py, "REMOTE_PORT"), remote_port)?;
            }
            None => env.del_item(pyo3::intern!(py, "REMOTE_PORT"))?,
        }
        for (place, &(name, value)) in req.headers.iter().enumerate() {
            // Names with `_` are dropped, as gunicorn does: a client could otherwise
            // send `X_Forwarded_For` and collide with the key of `X-Forwarded-For`.
            if name.contains(&b'_') {
                continue;
            }
            self.set_header(py, &env, place, name, value)?;
        }
        env.set_item(pyo3::intern!(py, "wsgi.input"), self.input(py, &req.body)?)?;
        Ok(env)
    }

    /// REMOTE_PORT's text: a connection's requests share one.
    fn remote_port<'py>(&mut self, py: Python<'py>, port: u16) -> PyResult<Bound<'py, PyString>> {
        let slot = &mut self.remote_ports[usize::from(port) % PORT_SLOTS];
        if let Some((last, text)) = slot {
            if *last == port {
                return Ok(text.bind(py).clone());
            }
        }
        let text = PyString::new(py, itoa::Buffer::new().format(port));
        *slot = Some((port, text.clone().unbind()));
        Ok(text)
    }

    /// wsgi.input over `body`: the last request's object when only this cache
    /// holds it, else a new one.
    fn input<'py>(&mut self, py: Python<'py>, body: &Body<'_>) -> PyResult<Bound<'py, Input>> {
        if let Some(last) = &self.input {
            #[allow(deprecated)] // The replacement is an unsafe ffi call; this read is all we need.
            if last.get_refcnt(py) == 1 {
                let last = last.bind(py);
                last.borrow_mut().reset(py, body);
                return Ok(last.clone());
            }
        }
        let input = Bound::new(py, Input::new(py, body))?;
        self.input = Some(input.clone().unbind());
        Ok(input)
    }

    /// Put one request header into `env`, joined to an earlier one of the same
    /// name in this request (RFC 9110 §5.3; cookies with `; `, RFC 6265 §5.4).
    fn set_header(
        &mut self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        place: usize,
        name: &[u8],
        value: &[u8],
    ) -> PyResult<()> {
        let (key, text, repeated) = match self.header_entry(py, place, name) {
            Some(i) => {
                let entry = &mut self.entries[i];
                let repeated = entry.set_by == self.request;
                entry.set_by = self.request;
                let text = entry.value.get(py, value, latin1)?;
                (entry.key.bind(py).clone(), text, repeated)
            }
            None => {
                // Past the cache's bound: made afresh, and asked of the dict.
                let key = PyString::new(py, &environ_key(&self.scratch));
                let repeated = env.contains(&key)?;
                (key, latin1(py, value)?, repeated)
            }
        };
        if !repeated {
            return env.set_item(key, text);
        }
        let sep = if name.eq_ignore_ascii_case(b"cookie") {
            "; "
        } else {
            ","
        };
        let joined = match env.get_item(&key)? {
            Some(prev) => format!(
                "{}{sep}{}",
                prev.cast::<PyString>()?.to_cow()?,
                text.to_cow()?
            ),
            None => text.to_cow()?.into_owned(),
        };
        env.set_item(key, joined)
    }

    /// The entry of the header `name` at `place` in its request: the one at that
    /// place last time if the name is the same, else found (or made) by its
    /// lower-cased name. `None` past `MAX_CACHED_KEYS`, with the lower-cased name
    /// in `scratch`.
    fn header_entry(&mut self, py: Python<'_>, place: usize, name: &[u8]) -> Option<usize> {
        if let Some(&(ref last, i)) = self.order.get(place) {
            if i != usize::MAX && last.as_slice() == name {
                return Some(i);
            }
        }
        self.scratch.clear();
        self.scratch.extend(name.iter().map(u8::to_ascii_lowercase));
        let i = match self.keys.get(&self.scratch) {
            Some(&i) => i,
            None if self.entries.len() < MAX_CACHED_KEYS => {
                self.entries.push(HeaderKey {
                    key: PyString::intern(py, &environ_key(&self.scratch)).unbind(),
                    value: LastText::default(),
                    set_by: 0,
                });
                self.keys
                    .insert(self.scratch.clone(), self.entries.len() - 1);
                self.entries.len() - 1
            }
            None => return None,
        };
        if place < ORDER_PLACES {
            if self.order.len() <= place {
                self.order
                    .resize_with(place + 1, || (Vec::new(), usize::MAX));
            }
            let (last, at) = &mut self.order[place];
            last.clear();
            last.extend_from_slice(name);
            *at = i;
        }
        Some(i)
    }
}

/// The environ key of a lower-cased header name: `CONTENT_TYPE`,
/// `CONTENT_LENGTH`, else `HTTP_` and the name upper-cased with `-` as `_`.
fn environ_key(lower_name: &[u8]) -> String {
    match lower_name {
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
    }
}

/// An address's bytes, tagged by family: what REMOTE_ADDR is compared by, so a
/// repeated client is not formatted again.
fn ip_key(ip: std::net::IpAddr) -> [u8; 17] {
    let mut key = [0u8; 17];
    match ip {
        std::net::IpAddr::V4(v4) => {
            key[0] = 4;
            key[1..5].copy_from_slice(&v4.octets());
        }
        std::net::IpAddr::V6(v6) => {
            key[0] = 6;
            key[1..].copy_from_slice(&v6.octets());
        }
    }
    key
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
