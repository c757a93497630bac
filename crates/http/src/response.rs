//! Serializing a response head (RFC 9112 §4, §6) and chunked body framing.
//!
//! Everything appends to a caller-owned `Vec<u8>` so a worker can reuse one
//! output buffer per connection; numbers are formatted without allocating.

use crate::date::HttpDate;

/// How the response body is delimited, which decides the framing header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// Add `Content-Length` unless the app gave one.
    Length(u64),
    /// Add `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends when the connection closes (HTTP/1.0).
    Close,
    /// Neither: 1xx, 204 and 304 responses have no body (RFC 9112 §6.3).
    NoBody,
}

/// A response head to serialize; header names and values are any byte
/// strings (`&[u8]`, or the `Vec<u8>`s a worker keeps).
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a, H = &'a [u8]> {
    /// Status code and reason as given by the WSGI app, e.g. `b"200 OK"`
    /// (already validated).
    pub status: &'a [u8],
    /// App headers, already validated (no CR, LF or NUL).
    pub headers: &'a [(H, H)],
    /// Body framing.
    pub framing: ResponseFraming,
    /// `false` adds `Connection: close`.
    pub keep_alive: bool,
    /// `true` adds `Connection: keep-alive` (an HTTP/1.0 client that asked
    /// for it and will get it).
    pub http10_keep_alive: bool,
}

/// Append the serialized head (through the empty line) to `out`.
///
/// Adds `Server: ferricorn` and `Date` unless the app already set them
/// (case-insensitive), then the app headers in order, then the framing header
/// and `Connection` as needed. Never duplicates `Content-Length` when the app
/// gave one. The app must not set hop-by-hop fields (`Connection`,
/// `Transfer-Encoding`; PEP 3333) — the worker checks that, not this writer.
pub fn write_head<H: AsRef<[u8]>>(out: &mut Vec<u8>, head: &ResponseHead<H>, date: &HttpDate) {
    let has = |name: &[u8]| {
        head.headers
            .iter()
            .any(|(n, _)| n.as_ref().eq_ignore_ascii_case(name))
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status);
    out.extend_from_slice(b"\r\n");
    if !has(b"server") {
        out.extend_from_slice(b"Server: ferricorn\r\n");
    }
    if !has(b"date") {
        field(out, b"Date", date.as_bytes());
    }
    for (name, value) in head.headers {
        field(out, name.as_ref(), value.as_ref());
    }
    match head.framing {
        ResponseFraming::Length(n) if !has(b"content-length") => {
            out.extend_from_slice(b"Content-Length: ");
            decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        ResponseFraming::Length(_) | ResponseFraming::Close | ResponseFraming::NoBody => {}
    }
    if !head.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if head.http10_keep_alive {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Append a complete error response for a refused request: status line,
/// `Server`, `Date`, `Content-Type: text/plain`, `Content-Length`,
/// `Connection: close` and the reason plus a newline as the body.
pub fn write_error(out: &mut Vec<u8>, status: u16, reason: &str, date: &HttpDate) {
    out.extend_from_slice(b"HTTP/1.1 ");
    decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nServer: ferricorn\r\n");
    field(out, b"Date", date.as_bytes());
    out.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: ");
    decimal(out, reason.len() as u64 + 1);
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(reason.as_bytes());
    out.push(b'\n');
}

/// Append one chunk of a chunked body (RFC 9112 §7.1). Writes nothing for
/// empty data, since a zero-size chunk would end the body.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    write_chunk_size(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The size line of a chunk of `len` (> 0) bytes, for a caller that sends the
/// data itself and then the CRLF that ends the chunk.
pub fn write_chunk_size(out: &mut Vec<u8>, len: usize) {
    hex(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// Append the last chunk and an empty trailer section.
pub fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn hex(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn date() -> HttpDate {
        let mut d = HttpDate::new();
        d.refresh(UNIX_EPOCH + Duration::from_secs(784_111_777));
        d
    }

    const DATE: &str = "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";

    fn head(
        headers: &[(&'static [u8], &'static [u8])],
        framing: ResponseFraming,
        keep_alive: bool,
        http10_keep_alive: bool,
    ) -> String {
        let mut out = Vec::new();
        let head = ResponseHead {
            status: b"200 OK",
            headers,
            framing,
            keep_alive,
            http10_keep_alive,
        };
        write_head(&mut out, &head, &date());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn heads() {
        use ResponseFraming::*;
        let ct: &[(&[u8], &[u8])] = &[(b"Content-Type", b"text/plain")];
        let cases: Vec<(&str, String, String)> = vec![
            // (what it guards, got, want)
            (
                "Content-Length added; defaults first, app headers in order",
                head(ct, Length(5), true, false),
                format!("HTTP/1.1 200 OK\r\nServer: ferricorn\r\n{DATE}Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n"),
            ),
            (
                "app Content-Length is not duplicated (any case)",
                head(&[(b"content-LENGTH", b"5")], Length(5), true, false),
                format!("HTTP/1.1 200 OK\r\nServer: ferricorn\r\n{DATE}content-LENGTH: 5\r\n\r\n"),
            ),
            (
                "app Server and Date win (any case)",
                head(&[(b"SERVER", b"x"), (b"date", b"y")], NoBody, true, false),
                "HTTP/1.1 200 OK\r\nSERVER: x\r\ndate: y\r\n\r\n".to_string(),
            ),
            (
                "chunked framing",
                head(&[], Chunked, true, false),
                format!("HTTP/1.1 200 OK\r\nServer: ferricorn\r\n{DATE}Transfer-Encoding: chunked\r\n\r\n"),
            ),
            (
                "close-delimited: no framing header, Connection: close",
                head(&[], Close, false, false),
                format!("HTTP/1.1 200 OK\r\nServer: ferricorn\r\n{DATE}Connection: close\r\n\r\n"),
            ),
            (
                "no body: no framing header",
                head(&[], NoBody, true, false),
                format!("HTTP/1.1 200 OK\r\nServer: ferricorn\r\n{DATE}\r\n"),
            ),
            (
                "HTTP/1.0 keep-alive is confirmed",
                head(&[], Length(0), true, true),
                format!("HTTP/1.1 200 OK\r\nServer: ferricorn\r\n{DATE}Content-Length: 0\r\nConnection: keep-alive\r\n\r\n"),
            ),
            (
                "close wins over http10_keep_alive",
                head(&[], Length(u64::MAX), false, true),
                format!("HTTP/1.1 200 OK\r\nServer: ferricorn\r\n{DATE}Content-Length: 18446744073709551615\r\nConnection: close\r\n\r\n"),
            ),
        ];
        for (what, got, want) in cases {
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn error_response() {
        let mut out = Vec::new();
        write_error(&mut out, 400, "Bad Request", &date());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("HTTP/1.1 400 Bad Request\r\nServer: ferricorn\r\n{DATE}Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n")
        );
    }

    #[test]
    fn chunks() {
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("empty data writes nothing", b"", b""),
            ("one byte", b"x", b"1\r\nx\r\n"),
            (
                "hex, lower case",
                &[b'a'; 26],
                b"1a\r\naaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            ),
        ];
        for &(what, data, want) in cases {
            let mut out = Vec::new();
            write_chunk(&mut out, data);
            assert_eq!(out, want, "{what}");
        }
        let mut out = Vec::new();
        write_chunk(&mut out, &[0; 4096]);
        assert!(out.starts_with(b"1000\r\n"));
        write_last_chunk(&mut out);
        assert!(out.ends_with(b"\r\n0\r\n\r\n"));
    }

    #[test]
    fn number_formatting() {
        let cases: &[(u64, &str, &str)] = &[
            (0, "0", "0"),
            (9, "9", "9"),
            (10, "10", "a"),
            (255, "255", "ff"),
            (u64::MAX, "18446744073709551615", "ffffffffffffffff"),
        ];
        for &(n, dec, hx) in cases {
            let (mut d, mut h) = (Vec::new(), Vec::new());
            decimal(&mut d, n);
            hex(&mut h, n);
            assert_eq!(
                (d.as_slice(), h.as_slice()),
                (dec.as_bytes(), hx.as_bytes())
            );
        }
    }
}
