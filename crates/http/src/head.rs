//! The request head: request line plus header section (RFC 9112 §2–§6).
//!
//! [`parse_head`] is called on the connection's receive buffer after every
//! read. It first scans for the end of the head — cheap, and it enforces the
//! size limits on what is buffered so far — and only runs `httparse` once the
//! head is complete. The result is stored as offsets so a connection can keep
//! the [`Head`] next to the buffer it points into.
//!
//! The rules are strict on purpose: anything a front proxy might read
//! differently (bare CR or LF, obs-fold, duplicate or list-valued
//! Content-Length, Transfer-Encoding next to Content-Length, codings other
//! than `chunked`) is refused rather than guessed at, so requests cannot be
//! smuggled past whatever sits in front of the server.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::error::HttpError;

/// Size limits applied while parsing. The defaults match gunicorn's.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest request line, excluding its CRLF (414 above it).
    pub max_request_line: usize,
    /// Most header fields in one request (431 above it).
    pub max_headers: usize,
    /// Longest header field line, *including* its CRLF (431 above it). CRLF
    /// counts here, unlike for the request line, because that is how
    /// gunicorn's `limit_request_field_size` behaves and configs carry over.
    pub max_field_size: usize,
    /// Largest head, counted from the first buffered byte through the final
    /// empty line (431 above it).
    pub max_head: usize,
    /// Largest request body; `u64::MAX` means unlimited (413 above it).
    pub max_body: u64,
    /// Accept obs-fold (a field line continued on the next line after SP or
    /// HTAB), as gunicorn's `permit_obsolete_folding`; else it is a 400. Only
    /// [`parse_head_unfolding`] can accept it, since it rewrites the buffer.
    pub permit_obs_fold: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 4094,
            max_headers: 100,
            max_field_size: 8190,
            max_head: 64 * 1024,
            max_body: u64::MAX,
            permit_obs_fold: false,
        }
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body: neither Content-Length nor Transfer-Encoding was sent.
    #[default]
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows; decode it with [`crate::ChunkedDecoder`].
    Chunked,
}

/// A parsed request head, as offsets into the caller's buffer (so the parsed
/// head owns no borrowed data and can be stored in a connection).
#[derive(Debug, Default, Clone)]
pub struct Head {
    /// The method token.
    pub method: Range<usize>,
    /// The raw request-target bytes.
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// (name, value) in wire order; values are trimmed of SP/HTAB.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// Bytes of the head, including any skipped leading empty lines and the
    /// final empty line: the body (or the next request) starts here.
    pub len: usize,
    /// How the request body is delimited.
    pub framing: Framing,
    /// Whether the connection may be reused after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
}

impl Head {
    /// Reset for reuse, keeping the header Vec's allocation.
    pub fn clear(&mut self) {
        self.method = 0..0;
        self.target = 0..0;
        self.minor_version = 0;
        self.headers.clear();
        self.len = 0;
        self.framing = Framing::None;
        self.keep_alive = false;
        self.expect_continue = false;
    }
}

/// Outcome of [`parse_head`] when the bytes seen so far are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet: read more and call again.
    Partial,
    /// The head is complete and `head` describes it.
    Complete,
}

/// Parse the request head at the start of `buf` into `head` (reusing its Vec).
///
/// Returns `Ok(Parsed::Partial)` when the head is not complete yet (and not
/// over a limit), `Ok(Parsed::Complete)` with `head.len` set, or the reason to
/// refuse the request. `head` is only meaningful after `Complete`.
pub fn parse_head(buf: &[u8], limits: &Limits, head: &mut Head) -> Result<Parsed, HttpError> {
    let Some((start, end)) = find_head(buf, limits)? else {
        reject_early(buf)?;
        return Ok(Parsed::Partial);
    };
    head.clear();
    head.len = end;
    run_httparse(buf, start, end, limits, head)?;
    check_target(buf, head)?;
    check_fields(buf, limits, head)?;
    Ok(Parsed::Complete)
}

/// As [`parse_head`], and with `limits.permit_obs_fold` also accepting obs-fold:
/// once the head is complete, each fold's CRLF is replaced in place by two SP
/// (RFC 9112 §5.2 lets a recipient replace an obs-fold with SP before it
/// interprets the field), so the continued field reads as one line and every
/// offset stays valid. Line limits then apply to the unfolded field.
pub fn parse_head_unfolding(
    buf: &mut [u8],
    limits: &Limits,
    head: &mut Head,
) -> Result<Parsed, HttpError> {
    let Some((start, end)) = find_head(buf, limits)? else {
        reject_early(buf)?;
        return Ok(Parsed::Partial);
    };
    let section = &mut buf[start..end];
    for i in 0..section.len().saturating_sub(2) {
        if section[i] == b'\r' && section[i + 1] == b'\n' && matches!(section[i + 2], b' ' | b'\t')
        {
            section[i] = b' ';
            section[i + 1] = b' ';
        }
    }
    parse_head(
        buf,
        &Limits {
            permit_obs_fold: false,
            ..limits.clone()
        },
        head,
    )
}

/// Find the head's bounds without parsing it: `Some((start, end))` where
/// `start` skips leading empty lines and `end` is just past the empty line
/// that closes the head, or `None` if that line has not arrived yet.
///
/// Lines are checked in order, and the same checks run on a trailing partial
/// line, so a request is refused for the same reason however it was split
/// across reads.
/// An incomplete head whose request line already cannot be HTTP/1.x — a TLS
/// ClientHello, `GET /` and CRLF (HTTP/0.9), a PROXY line when the protocol is off
/// — is answered now, with the error the whole head would get, rather than held
/// until the header timeout. httparse reads the request line first and says
/// `Partial` for every prefix of a valid one.
fn reject_early(buf: &[u8]) -> Result<(), HttpError> {
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    // A CR at the end may be the first half of a CRLF, or a bare CR that the
    // line checks will name once the next byte comes: not httparse's to judge.
    let bytes = buf[start..].strip_suffix(b"\r").unwrap_or(&buf[start..]);
    let mut req = httparse::Request::new(&mut []);
    match req.parse(bytes) {
        // No header slots: a request line that parsed stops at the first header.
        Ok(_) | Err(httparse::Error::TooManyHeaders) => Ok(()),
        // Header bytes of a head not yet complete are judged once it is.
        Err(_) if req.version.is_some() => Ok(()),
        // A version still being written (`HTTP/2.`) is judged whole: a complete
        // one we do not speak is a 505, not a malformed one.
        Err(httparse::Error::Version) if version_may_come(bytes) => Ok(()),
        // HTTP/1.2 and up are read as 1.1 once the head is complete.
        Err(httparse::Error::Version) if later_minor_version(bytes).is_some() => Ok(()),
        Err(e) => Err(map_httparse_error(e, bytes)),
    }
}

/// Where the minor digit of the request line's version is, if that version is
/// HTTP/1.2 to HTTP/1.9. RFC 9110 §2.5: a message of a higher minor version is
/// processed as the highest minor version the recipient speaks (1.1 here).
fn later_minor_version(head: &[u8]) -> Option<usize> {
    let line_end = memchr::memchr(b'\r', head)?;
    let line = &head[..line_end];
    let at = line.len().checked_sub(9)?;
    match &line[at..] {
        [b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'2'..=b'9'] => Some(line_end - 1),
        _ => None,
    }
}

/// The request line is not finished, and what follows its second SP can still
/// become `HTTP/d.d`.
fn version_may_come(bytes: &[u8]) -> bool {
    if memchr::memchr(b'\n', bytes).is_some() {
        return false;
    }
    let mut fields = bytes.splitn(3, |&b| b == b' ');
    let version = fields.nth(2).unwrap_or_default();
    let shape = b"HTTP/0.0";
    version.len() <= shape.len()
        && version.iter().zip(shape).all(|(&b, &want)| match want {
            b'0' => b.is_ascii_digit(),
            _ => b == want,
        })
}

fn find_head(buf: &[u8], limits: &Limits) -> Result<Option<(usize, usize)>, HttpError> {
    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF)
    // received prior to the request-line. They still count toward max_head,
    // so a stream of CRLFs cannot grow the buffer forever.
    let mut pos = 0;
    while buf[pos..].starts_with(b"\r\n") {
        pos += 2;
    }
    let start = pos;
    let mut is_request_line = true;
    loop {
        let rest = &buf[pos..];
        let Some(lf) = memchr::memchr(b'\n', rest) else {
            // Incomplete line: apply the line limits to what we have, not
            // counting a CR that may be the first half of the CRLF.
            let content = rest.strip_suffix(b"\r").unwrap_or(rest);
            check_line(content, pos, is_request_line, limits)?;
            if buf.len() > limits.max_head {
                return Err(HttpError::HeadersTooLarge);
            }
            return Ok(None);
        };
        // RFC 9112 §2.2 lets a recipient accept a bare LF as a line
        // terminator; we do not, because a proxy in front that disagrees
        // about where a line ends is exactly how requests get smuggled.
        // The line's content is checked first: its rules break at earlier bytes
        // than the LF, and a read that ended before the LF saw only those.
        let ends_in_crlf = rest[..lf].ends_with(b"\r");
        let line = rest[..lf].strip_suffix(b"\r").unwrap_or(&rest[..lf]);
        check_line(line, pos, is_request_line, limits)?;
        if !ends_in_crlf {
            return Err(HttpError::BadRequest("bare LF in head"));
        }
        let line_end = pos + lf + 1;
        if line_end > limits.max_head {
            return Err(HttpError::HeadersTooLarge);
        }
        if line.is_empty() {
            return Ok(Some((start, line_end)));
        }
        // RFC 9112 §5.2: obs-fold is deprecated; a server MAY reject it with
        // 400, which is the only answer that cannot be misread downstream.
        if !is_request_line && matches!(line[0], b' ' | b'\t') && !limits.permit_obs_fold {
            return Err(HttpError::BadRequest("obsolete line folding"));
        }
        is_request_line = false;
        pos = line_end;
    }
}

/// Checks on one line of the head (without its CRLF, possibly incomplete).
/// `start`: where the line begins in the buffer. Of the rules a line breaks,
/// the one broken at the earliest byte decides the answer, so a request gets
/// the same status however its bytes were split across reads.
fn check_line(
    line: &[u8],
    start: usize,
    is_request_line: bool,
    limits: &Limits,
) -> Result<(), HttpError> {
    // RFC 9112 §2.2: a bare CR must be rejected or replaced by SP before
    // the message is processed or forwarded. We reject.
    let bare_cr = memchr::memchr(b'\r', line);
    // The field limit counts the CRLF (as gunicorn's does); the request line's does not.
    let line_limit = if is_request_line {
        limits.max_request_line
    } else {
        limits.max_field_size.saturating_sub(2)
    };
    let over_line = (line.len() > line_limit).then_some(line_limit);
    let head_room = limits.max_head.saturating_sub(start);
    let over_head = (line.len() > head_room).then_some(head_room);
    let first = [bare_cr, over_line, over_head].into_iter().flatten().min();
    match first {
        None => Ok(()),
        Some(at) if Some(at) == bare_cr => Err(HttpError::BadRequest("bare CR in head")),
        Some(at) if Some(at) == over_line && is_request_line => Err(HttpError::UriTooLong),
        Some(_) => Err(HttpError::HeadersTooLarge),
    }
}

/// Headers fit on the stack up to this many (the default limit).
const STACK_HEADERS: usize = 100;

fn run_httparse(
    buf: &[u8],
    start: usize,
    end: usize,
    limits: &Limits,
    head: &mut Head,
) -> Result<(), HttpError> {
    // Left uninitialised for httparse to fill: zeroing 100 slots cost more than
    // parsing a small request.
    let mut stack = [const { MaybeUninit::<httparse::Header>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header>] = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap.resize_with(limits.max_headers, MaybeUninit::uninit);
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let bytes = &buf[start..end];
    // HTTP/1.2 and up (which httparse refuses) are parsed as 1.1 from a copy
    // that says so; every offset is the same in both.
    let copy;
    let (buf, bytes) = match later_minor_version(bytes) {
        Some(digit) => {
            let mut c = buf[..end].to_vec();
            c[start + digit] = b'1';
            copy = c;
            (&copy[..], &copy[start..end])
        }
        None => (buf, bytes),
    };
    match req.parse_with_uninit_headers(bytes, slots) {
        Ok(httparse::Status::Complete(n)) if n == bytes.len() => {}
        // find_head saw the closing empty line, so httparse must agree.
        Ok(_) => return Err(HttpError::BadRequest("head framing disagreement")),
        Err(e) => return Err(map_httparse_error(e, bytes)),
    }
    // httparse only fills these on Complete, so they are all Some here.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::BadRequest("incomplete request line"));
    };
    head.method = offsets(buf, method.as_bytes());
    head.target = offsets(buf, target.as_bytes());
    head.minor_version = version;
    for h in req.headers.iter() {
        let value = trim_ows(h.value);
        // RFC 9110 §5.5: field values are VCHAR, obs-text, SP and HTAB.
        // httparse already refuses the other controls; checking here keeps
        // the rule ours rather than a detail of one httparse version.
        if has_ctl(value) {
            return Err(HttpError::BadRequest("control character in header value"));
        }
        head.headers
            .push((offsets(buf, h.name.as_bytes()), offsets(buf, value)));
    }
    Ok(())
}

fn map_httparse_error(e: httparse::Error, head: &[u8]) -> HttpError {
    use httparse::Error as E;
    match e {
        E::TooManyHeaders => HttpError::HeadersTooLarge,
        E::HeaderName => HttpError::BadRequest("invalid header name"),
        E::HeaderValue => HttpError::BadRequest("invalid header value"),
        E::NewLine => HttpError::BadRequest("invalid line ending"),
        E::Status => HttpError::BadRequest("invalid status"),
        E::Token => HttpError::BadRequest("invalid method or request-target"),
        E::Version => {
            // A well-formed version we do not speak (HTTP/2.0, HTTP/1.2,
            // HTTP/0.9 — including the HTTP/2 preface "PRI * HTTP/2.0") is a
            // 505; anything else in that position is just malformed.
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
            match version {
                [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                    if major.is_ascii_digit() && minor.is_ascii_digit() =>
                {
                    if version == b"HTTP/1.0" || version == b"HTTP/1.1" {
                        // A supported version in last place means the
                        // request line itself is malformed (e.g. extra spaces).
                        HttpError::BadRequest("malformed request line")
                    } else {
                        HttpError::VersionNotSupported
                    }
                }
                _ => HttpError::BadRequest("invalid HTTP version"),
            }
        }
    }
}

/// RFC 9112 §3.2: which request-target forms are allowed. The parser only
/// checks the shape; what to do with an absolute-form or asterisk-form target
/// is the worker's decision.
fn check_target(buf: &[u8], head: &Head) -> Result<(), HttpError> {
    let method = &buf[head.method.clone()];
    let target = &buf[head.target.clone()];
    if target.is_empty() {
        return Err(HttpError::BadRequest("empty request-target"));
    }
    // §3.2.3: CONNECT takes authority-form (host ":" port), and only it does.
    if method == b"CONNECT" {
        return if is_authority_form(target) {
            Ok(())
        } else {
            Err(HttpError::BadRequest("CONNECT needs host:port"))
        };
    }
    // §3.2.1 origin-form; §3.2.4 asterisk-form, which is for OPTIONS only.
    if target[0] == b'/' {
        return Ok(());
    }
    if target == b"*" {
        return if method == b"OPTIONS" {
            Ok(())
        } else {
            Err(HttpError::BadRequest(
                "asterisk-form target is for OPTIONS only",
            ))
        };
    }
    // §3.2.2 absolute-form. We require "scheme://" so that an authority-form
    // target like "example.com:443" on a non-CONNECT method (which also
    // parses as a URI with scheme "example.com") is refused.
    if is_absolute_form(target) {
        return Ok(());
    }
    Err(HttpError::BadRequest("invalid request-target"))
}

fn is_authority_form(target: &[u8]) -> bool {
    let Some(colon) = target.iter().rposition(|&b| b == b':') else {
        return false;
    };
    let (host, port) = (&target[..colon], &target[colon + 1..]);
    !host.is_empty()
        && !port.is_empty()
        && port.iter().all(u8::is_ascii_digit)
        && !host.iter().any(|b| b"/?#@".contains(b))
}

fn is_absolute_form(target: &[u8]) -> bool {
    // RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    let Some(colon) = target.iter().position(|&b| b == b':') else {
        return false;
    };
    let scheme = &target[..colon];
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && target[colon + 1..].starts_with(b"//")
}

/// Header-level rules: Host, body framing, Connection and Expect.
fn check_fields(buf: &[u8], limits: &Limits, head: &mut Head) -> Result<(), HttpError> {
    let mut hosts = 0;
    let mut host_field = None;
    let mut content_length: Option<&[u8]> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let (mut several_te_lines, mut te_lines_are_lists) = (false, false);
    let mut content_type = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    for (place, (name, value)) in head.headers.iter().enumerate() {
        let (name, value) = (&buf[name.clone()], &buf[value.clone()]);
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host_field = Some(place);
            if !is_valid_host(value) {
                return Err(HttpError::BadRequest("invalid Host"));
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9112 §6.3 item 5 lets a recipient accept repeated identical
            // values; we refuse any repeat, since a proxy might pick either.
            if content_length.replace(value).is_some() {
                return Err(HttpError::BadRequest("duplicate Content-Length"));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Several lines form one list (RFC 9110 §5.3), of two codings at
            // least: never `chunked` alone, so judged as such a list would be.
            if transfer_encoding.replace(value).is_some() {
                te_lines_are_lists &= is_token_list(value);
                several_te_lines = true;
            } else {
                te_lines_are_lists = is_token_list(value);
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            // Not a list (RFC 9110 §8.3): two would reach the app merged into one
            // value that neither sender meant. gunicorn refuses them too.
            if std::mem::replace(&mut content_type, true) {
                return Err(HttpError::BadRequest("duplicate Content-Type"));
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            // RFC 9112 §9.3: connection options are a case-insensitive list.
            for option in list_elements(value) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
    }

    head.framing = match (transfer_encoding, content_length) {
        (None, None) => Framing::None,
        // RFC 9112 §6.1: a server MAY reject a request with both, and
        // must close the connection if it does not; rejecting is simpler.
        (Some(_), Some(_)) => {
            return Err(HttpError::BadRequest(
                "both Transfer-Encoding and Content-Length",
            ))
        }
        // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 must be treated as
        // faulty framing, since 1.0 intermediaries do not understand it.
        (Some(_), None) if head.minor_version == 0 => {
            return Err(HttpError::BadRequest("Transfer-Encoding in HTTP/1.0"))
        }
        (Some(_), None) if several_te_lines && te_lines_are_lists => {
            return Err(HttpError::NotImplemented)
        }
        (Some(_), None) if several_te_lines => {
            return Err(HttpError::BadRequest("invalid Transfer-Encoding"))
        }
        (Some(te), None) => transfer_coding(te)?,
        (None, Some(cl)) => {
            let n = parse_content_length(cl)?;
            if n > limits.max_body {
                return Err(HttpError::BodyTooLarge);
            }
            Framing::Length(n)
        }
    };

    // RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request that
    // lacks Host, and to any request with more than one Host line.
    if hosts > 1 || (hosts == 0 && head.minor_version == 1) {
        return Err(HttpError::BadRequest("missing or duplicate Host"));
    }
    // RFC 9112 §3.2.2: with an absolute-form target, its authority is the
    // host, whatever the Host field says; the field is read as if it said so.
    if let Some(authority) = absolute_form_authority(buf, head) {
        if !is_valid_host(&buf[authority.clone()]) {
            return Err(HttpError::BadRequest("invalid authority in request-target"));
        }
        if let Some(place) = host_field {
            head.headers[place].1 = authority;
        }
    }

    // RFC 9112 §9.3: 1.1 is persistent unless "close"; 1.0 only with
    // "keep-alive" (and "close" wins if a client sends both).
    head.keep_alive = !close && (head.minor_version == 1 || keep_alive);
    // RFC 9110 §10.1.1: 100-continue only means something to 1.1 clients.
    head.expect_continue = expect_continue && head.minor_version == 1;
    Ok(())
}

/// The host and port of an absolute-form target (`http://host:port/path`),
/// without any userinfo.
fn absolute_form_authority(buf: &[u8], head: &Head) -> Option<Range<usize>> {
    let target = &buf[head.target.clone()];
    if target.starts_with(b"/") || !is_absolute_form(target) {
        return None;
    }
    let begin = target.windows(3).position(|w| w == b"://")? + 3;
    let len = target[begin..]
        .iter()
        .position(|b| b"/?#".contains(b))
        .unwrap_or(target.len() - begin);
    let authority = &target[begin..begin + len];
    let host_at = authority
        .iter()
        .rposition(|&b| b == b'@')
        .map_or(0, |i| i + 1);
    let start = head.target.start + begin + host_at;
    Some(start..head.target.start + begin + len)
}

/// RFC 9110 §7.2: Host = uri-host [ ":" port ], with RFC 3986's uri-host: an
/// IP literal in brackets, or a reg-name (which an IPv4 address also is). An
/// empty value is allowed (a target without an authority).
fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            if !is_ip_literal(&rest[..close]) {
                return false;
            }
            match &rest[close + 1..] {
                [] => (&b""[..], &b""[..]),
                [b':', port @ ..] => (&b""[..], port),
                _ => return false,
            }
        }
        None => match value.iter().rposition(|&b| b == b':') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, &b""[..]),
        },
    };
    port.iter().all(u8::is_ascii_digit) && is_reg_name(host)
}

/// IPv6address or IPvFuture, loosely: the right characters, not the full grammar.
fn is_ip_literal(literal: &[u8]) -> bool {
    match literal.first() {
        None => false,
        Some(b'v' | b'V') => literal
            .iter()
            .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':'),
        Some(_) => literal
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
    }
}

/// reg-name = *( unreserved / pct-encoded / sub-delims )
fn is_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                if !host
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
            }
            b if is_unreserved(b) || is_sub_delim(b) => i += 1,
            _ => return false,
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn is_sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

/// RFC 9112 §6.1: only `chunked`, alone, is accepted. A well-formed list of
/// other codings is a 501 (we decode none of them, and `chunked` must be the
/// final coding anyway); bytes that are not a token list at all are a 400.
fn transfer_coding(value: &[u8]) -> Result<Framing, HttpError> {
    if value.eq_ignore_ascii_case(b"chunked") {
        return Ok(Framing::Chunked);
    }
    if is_token_list(value) {
        Err(HttpError::NotImplemented)
    } else {
        Err(HttpError::BadRequest("invalid Transfer-Encoding"))
    }
}

/// `token *( OWS "," OWS token )`: a well-formed list of codings.
fn is_token_list(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .all(|e| !e.is_empty() && e.iter().all(|&b| is_tchar(b)))
}

/// RFC 9110 §8.6: Content-Length = 1*DIGIT. No sign, no inner spaces, and
/// no list form (even "5, 5", which §8.6 lets a recipient accept).
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    const BAD: HttpError = HttpError::BadRequest("invalid Content-Length");
    if value.is_empty() {
        return Err(BAD);
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(BAD);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(BAD)
    })
}

/// Non-empty, OWS-trimmed elements of a comma-separated list (RFC 9110 §5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// The range `part` occupies inside `buf` (`part` must be a sub-slice of it).
fn offsets(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    if start > buf.len() || buf.len() - start < part.len() {
        // Only an empty slice from elsewhere can get here; it is equally
        // empty at the end of the buffer.
        debug_assert!(part.is_empty(), "slice not inside the buffer");
        return buf.len()..buf.len();
    }
    start..start + part.len()
}

/// Strip optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 §5.6.2 `tchar`, by byte: a table, since every header name of every
/// request and response is checked.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// RFC 9110 §5.6.2 tchar.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A control character not allowed in a field value (everything but HTAB).
pub(crate) fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Whether any byte of `s` is a control character (not allowed in a field value):
/// every byte is looked at, with no early exit, so the compiler can check 32 at a
/// time (header values are most of a request's bytes, and nearly always clean).
pub fn has_ctl(s: &[u8]) -> bool {
    s.iter().fold(false, |found, &b| found | is_ctl(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use HttpError::*;

    fn parse(buf: &[u8]) -> Result<(Parsed, Head), HttpError> {
        parse_with(buf, &Limits::default())
    }

    fn parse_with(buf: &[u8], limits: &Limits) -> Result<(Parsed, Head), HttpError> {
        let mut head = Head::default();
        parse_head(buf, limits, &mut head).map(|p| (p, head))
    }

    /// Shorthand for a complete HTTP/1.1 GET with the given header lines.
    fn get(headers: &str) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nHost: h\r\n{headers}\r\n").into_bytes()
    }

    fn post(headers: &str) -> Vec<u8> {
        format!("POST / HTTP/1.1\r\nHost: h\r\n{headers}\r\n").into_bytes()
    }

    #[rustfmt::skip]
    #[test]
    fn accepted_heads() {
        let cases: &[(&str, &[u8], Framing, bool, bool)] = &[
            // (what it guards, request, framing, keep_alive, expect_continue)
            ("plain 1.1 GET", &get(""), Framing::None, true, false),
            ("1.0 without keep-alive closes", b"GET / HTTP/1.0\r\n\r\n", Framing::None, false, false),
            ("1.0 keep-alive, any case", b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", Framing::None, true, false),
            ("1.1 close is a token in a list", &get("Connection: upgrade, CLOSE\r\n"), Framing::None, false, false),
            ("close wins over keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", Framing::None, false, false),
            ("Connection lines combine", &get("Connection: foo\r\nConnection: close\r\n"), Framing::None, false, false),
            ("Content-Length", &post("Content-Length: 42\r\n"), Framing::Length(42), true, false),
            ("Content-Length zero", &post("content-length: 0\r\n"), Framing::Length(0), true, false),
            ("Content-Length u64::MAX", &post("Content-Length: 18446744073709551615\r\n"), Framing::Length(u64::MAX), true, false),
            ("chunked, any case, OWS trimmed", &post("Transfer-Encoding: \t ChUnKeD \r\n"), Framing::Chunked, true, false),
            ("100-continue, any case", &post("Expect: 100-Continue\r\nContent-Length: 1\r\n"), Framing::Length(1), true, true),
            ("100-continue is ignored on 1.0", b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", Framing::None, false, false),
            ("other expectations are not 100-continue", &post("Expect: 200-ok\r\n"), Framing::None, true, false),
            ("1.0 needs no Host", b"GET / HTTP/1.0\r\n\r\n", Framing::None, false, false),
        ];
        for &(what, req, framing, keep_alive, expect_continue) in cases {
            let (p, head) = parse(req).unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(p, Parsed::Complete, "{what}");
            assert_eq!(head.len, req.len(), "{what}");
            assert_eq!(head.framing, framing, "{what}");
            assert_eq!(head.keep_alive, keep_alive, "{what}");
            assert_eq!(head.expect_continue, expect_continue, "{what}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn accepted_targets() {
        let cases: &[(&str, &str, &str)] = &[
            // (what it guards, method, target)
            ("origin-form", "GET", "/a/b?c=d"),
            ("origin-form keeps repeated slashes", "GET", "///x"),
            ("absolute-form", "GET", "http://example.com/foo?q=1"),
            ("absolute-form with userinfo and IPv6", "GET", "http://u:p@[::1]:8080/x"),
            ("asterisk-form for OPTIONS", "OPTIONS", "*"),
            ("authority-form for CONNECT", "CONNECT", "example.com:443"),
            ("authority-form with IPv6 for CONNECT", "CONNECT", "[::1]:443"),
            ("method is any token", "-BLARGH", "/"),
        ];
        for &(what, method, target) in cases {
            let req = format!("{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let (_, head) = parse(req.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(&req.as_bytes()[head.method], method.as_bytes(), "{what}");
            assert_eq!(&req.as_bytes()[head.target], target.as_bytes(), "{what}");
        }
    }

    #[test]
    fn host_values_and_the_authority_that_replaces_them() {
        let host_of = |req: &[u8]| -> Vec<u8> {
            let (p, head) = parse(req).unwrap_or_else(|e| panic!("{e:?}: {req:?}"));
            assert_eq!(p, Parsed::Complete);
            let (_, value) = head
                .headers
                .iter()
                .find(|(n, _)| req[n.clone()].eq_ignore_ascii_case(b"host"))
                .expect("a Host field");
            req[value.clone()].to_vec()
        };
        for host in [
            &b"example.com"[..],
            b"example.com:8080",
            b"example.com:",
            b"",
            b"127.0.0.1:80",
            b"[::1]",
            b"[::1]:8080",
            b"[::ffff:10.0.0.1]",
            b"[v1.fe80::a+en1]",
            b"a_b-c~d.example",
            b"%41.example",
            b"a,b",
        ] {
            let mut req = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            req.extend_from_slice(host);
            req.extend_from_slice(b"\r\n\r\n");
            assert_eq!(host_of(&req), host, "{:?}", String::from_utf8_lossy(host));
        }
        // RFC 9112 §3.2.2: the target's authority wins; userinfo is not the host.
        assert_eq!(
            host_of(b"GET http://good.example/p HTTP/1.1\r\nHost: other.example\r\n\r\n"),
            b"good.example"
        );
        assert_eq!(
            host_of(b"GET http://u:p@[::1]:8080?q HTTP/1.1\r\nHost: h\r\n\r\n"),
            b"[::1]:8080"
        );
        assert_eq!(host_of(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), b"h");
    }

    #[test]
    fn a_later_minor_version_is_read_as_1_1() {
        // RFC 9110 §2.5 (issue 19: it got 505).
        for version in ["1.2", "1.9"] {
            let req = format!("GET /x HTTP/{version}\r\nHost: h\r\n\r\n");
            let (p, head) = parse(req.as_bytes()).unwrap();
            assert_eq!(p, Parsed::Complete);
            assert_eq!(head.minor_version, 1);
            assert_eq!(&req.as_bytes()[head.target.clone()], b"/x");
            // Not answered early while the head is still coming.
            assert_eq!(parse(&req.as_bytes()[..20]).unwrap().0, Parsed::Partial);
        }
        assert_eq!(
            parse(b"GET / HTTP/1.2\r\n\r\n").map(|r| r.0),
            Err(HttpError::BadRequest("missing or duplicate Host"))
        );
    }

    #[test]
    fn offsets_point_into_the_buffer() {
        // Leading empty lines are skipped (RFC 9112 §2.2) but counted in len.
        let req = b"\r\n\r\nPUT /x HTTP/1.1\r\nHost:  a.b \t\r\nX-Empty:\r\n\r\nbody";
        let (p, head) = parse(req).unwrap();
        assert_eq!(p, Parsed::Complete);
        assert_eq!(&req[head.method.clone()], b"PUT");
        assert_eq!(&req[head.target.clone()], b"/x");
        assert_eq!(head.minor_version, 1);
        let fields: Vec<(&[u8], &[u8])> = head
            .headers
            .iter()
            .map(|(n, v)| (&req[n.clone()], &req[v.clone()]))
            .collect();
        assert_eq!(fields, [(&b"Host"[..], &b"a.b"[..]), (b"X-Empty", b"")]);
        assert_eq!(&req[head.len..], b"body");
    }

    #[test]
    fn clear_keeps_the_allocation() {
        let (_, mut head) = parse(&get("A: 1\r\nB: 2\r\n")).unwrap();
        let cap = head.headers.capacity();
        head.clear();
        assert!(head.headers.is_empty());
        assert_eq!(head.headers.capacity(), cap);
        assert_eq!(head.len, 0);
        assert_eq!(head.framing, Framing::None);
    }

    #[test]
    fn a_request_line_that_cannot_be_http_1_is_answered_before_the_head_ends() {
        use HttpError::*;
        let bad = BadRequest;
        let cases: &[(&str, &[u8], HttpError)] = &[
            // Regression: each of these waited for the header timeout (30 s).
            (
                "HTTP/2 preface, first line",
                b"PRI * HTTP/2.0\r\n",
                VersionNotSupported,
            ),
            (
                "HTTP/0.9",
                b"GET /\r\n",
                bad("invalid method or request-target"),
            ),
            (
                "TLS ClientHello",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                bad("invalid method or request-target"),
            ),
            (
                "PROXY line, protocol off",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
                bad("invalid HTTP version"),
            ),
        ];
        for (what, req, want) in cases {
            assert_eq!(parse(req).map(|r| r.0), Err(*want), "{what}");
            // The same answer the whole head would get.
            let mut whole = req.to_vec();
            whole.extend_from_slice(b"Host: h\r\n\r\n");
            assert_eq!(parse(&whole).map(|r| r.0), Err(*want), "{what}, whole");
        }
    }

    #[test]
    fn partial_heads() {
        let cases: &[(&str, &[u8])] = &[
            ("nothing yet", b""),
            ("only a leading empty line", b"\r\n"),
            ("half a CRLF", b"GET / HTTP/1.1\r"),
            ("request line only", b"GET / HTTP/1.1\r\n"),
            (
                "headers but no empty line",
                b"GET / HTTP/1.1\r\nHost: h\r\n",
            ),
            ("CR of the final CRLF", b"GET / HTTP/1.1\r\nHost: h\r\n\r"),
            ("a CR that may start the CRLF", b"GET /01\r"),
        ];
        for &(what, req) in cases {
            assert_eq!(parse(req).map(|r| r.0), Ok(Parsed::Partial), "{what}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn rejected_heads() {
        let bad = |r: &'static str| BadRequest(r);
        let cases: &[(&str, Vec<u8>, HttpError)] = &[
            // Host (RFC 9112 §3.2).
            ("1.1 without Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), bad("missing or duplicate Host")),
            ("duplicate Host", get("Host: h\r\n"), bad("missing or duplicate Host")),
            ("duplicate Host on 1.0", b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), bad("missing or duplicate Host")),
            // Not uri-host [ ":" port ] (issue 19: these reached the app).
            ("Host with a space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(), bad("invalid Host")),
            ("Host with a slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n".to_vec(), bad("invalid Host")),
            ("Host with an open bracket", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n".to_vec(), bad("invalid Host")),
            ("Host as a list", b"GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n".to_vec(), bad("invalid Host")),
            ("Host with a bad port", b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n".to_vec(), bad("invalid Host")),
            ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n".to_vec(), bad("invalid Host")),
            ("Host, bad escape", b"GET / HTTP/1.1\r\nHost: a%4\r\n\r\n".to_vec(), bad("invalid Host")),
            ("Host, IPv6 without brackets", b"GET / HTTP/1.1\r\nHost: ::1\r\n\r\n".to_vec(), bad("invalid Host")),
            ("absolute-form, bad port", b"GET http://a:x/ HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("invalid authority in request-target")),
            // Regression: these reached the app (issue 19); gunicorn refuses both.
            ("asterisk-form for GET", b"GET * HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("asterisk-form target is for OPTIONS only")),
            ("two Content-Types", get("Content-Type: a/b\r\ncontent-type: c/d\r\n"), bad("duplicate Content-Type")),
            // Line endings (RFC 9112 §2.2).
            ("bare LF ends a header line", get("A: b\n"), bad("bare LF in head")),
            ("bare LF ends the head", b"GET / HTTP/1.1\r\nHost: h\r\n\n".to_vec(), bad("bare LF in head")),
            ("LF LF head", b"GET / HTTP/1.1\nHost: h\n\n".to_vec(), bad("bare LF in head")),
            ("bare CR in a value", get("A: b\rc\r\n"), bad("bare CR in head")),
            ("bare CR in the request line", b"GET /\r HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("bare CR in head")),
            ("bare CR seen while incomplete", b"GET / HTTP/1.1\r\nA: \rb".to_vec(), bad("bare CR in head")),
            ("leading bare LF", b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("bare LF in head")),
            // Field syntax (RFC 9112 §5).
            ("whitespace between name and colon", get("Content-Length : 3\r\n"), bad("invalid header name")),
            ("obs-fold with SP", get("A: b\r\n c\r\n"), bad("obsolete line folding")),
            ("obs-fold with HTAB", get("A: b\r\n\tc\r\n"), bad("obsolete line folding")),
            ("NUL in a value", get("A: b\0c\r\n"), bad("invalid header value")),
            ("BEL in a value", get("A: b\x07c\r\n"), bad("invalid header value")),
            ("DEL in a value", get("A: b\x7fc\r\n"), bad("invalid header value")),
            ("non-token header name", get("A@b: c\r\n"), bad("invalid header name")),
            ("NUL in a header name", get("a\0b: c\r\n"), bad("invalid header name")),
            ("non-ASCII header name", "GET / HTTP/1.1\r\nHost: h\r\nContent-Lengthß: 3\r\n\r\n" .as_bytes() .to_vec(), bad("invalid header name")),
            ("header line without colon", get("NoColon\r\n"), bad("invalid header name")),
            // Content-Length (RFC 9110 §8.6, RFC 9112 §6.3).
            ("negative Content-Length", post("Content-Length: -1\r\n"), bad("invalid Content-Length")),
            ("signed Content-Length", post("Content-Length: +1\r\n"), bad("invalid Content-Length")),
            ("Content-Length with inner space", post("Content-Length: 0 1\r\n"), bad("invalid Content-Length")),
            ("Content-Length list", post("Content-Length: 5, 5\r\n"), bad("invalid Content-Length")),
            ("empty Content-Length", post("Content-Length:\r\n"), bad("invalid Content-Length")),
            ("hex Content-Length", post("Content-Length: 0x10\r\n"), bad("invalid Content-Length")),
            ("Content-Length over u64", post("Content-Length: 18446744073709551616\r\n"), bad("invalid Content-Length")),
            ("same Content-Length twice", post("Content-Length: 5\r\nContent-Length: 5\r\n"), bad("duplicate Content-Length")),
            ("different Content-Lengths", post("Content-Length: 5\r\ncontent-length: 6\r\n"), bad("duplicate Content-Length")),
            // Transfer-Encoding (RFC 9112 §6.1).
            ("TE with CL", post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"), bad("both Transfer-Encoding and Content-Length")),
            ("TE with CL, TE first", post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"), bad("both Transfer-Encoding and Content-Length")),
            // Two lines are one list (issue 19: they got 400 where one line got 501).
            ("two TE lines", post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"), NotImplemented),
            ("two chunked TE lines", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), NotImplemented),
            ("two TE lines, one malformed", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: ,\r\n"), bad("invalid Transfer-Encoding")),
            ("two TE lines and CL", post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"), bad("both Transfer-Encoding and Content-Length")),
            ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), bad("Transfer-Encoding in HTTP/1.0")),
            ("chunked not alone", post("Transfer-Encoding: gzip, chunked\r\n"), NotImplemented),
            ("chunked not last", post("Transfer-Encoding: chunked, gzip\r\n"), NotImplemented),
            ("identity", post("Transfer-Encoding: identity\r\n"), NotImplemented),
            ("chunked listed twice", post("Transfer-Encoding: chunked, chunked\r\n"), NotImplemented),
            ("obs-text before chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \x85chunked\r\n\r\n".to_vec(), bad("invalid Transfer-Encoding")),
            ("obs-text after chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\xa0\r\n\r\n".to_vec(), bad("invalid Transfer-Encoding")),
            ("empty list element", post("Transfer-Encoding: chunked,\r\n"), bad("invalid Transfer-Encoding")),
            ("empty TE", post("Transfer-Encoding:\r\n"), bad("invalid Transfer-Encoding")),
            // Request line (RFC 9112 §3).
            ("HTTP/2.0", b"GET / HTTP/2.0\r\n\r\n".to_vec(), VersionNotSupported),
            ("HTTP/0.9 spelled out", b"GET / HTTP/0.9\r\n\r\n".to_vec(), VersionNotSupported),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), VersionNotSupported),
            ("not HTTP", b"GET / FTP/1.1\r\n\r\n".to_vec(), bad("invalid HTTP version")),
            ("version without dot", b"GET / HTTP/111\r\n\r\n".to_vec(), bad("invalid HTTP version")),
            ("version with long major", b"GET / HTTP/11.1\r\n\r\n".to_vec(), bad("invalid HTTP version")),
            ("lower-case http", b"GET / http/1.1\r\n\r\n".to_vec(), bad("invalid HTTP version")),
            ("missing target", b"GET HTTP/1.1\r\n\r\n".to_vec(), bad("invalid method or request-target")),
            ("two spaces before target", b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("invalid method or request-target")),
            ("extra word in request line", b"GET / x HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("malformed request line")),
            ("trailing space after version", b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n".to_vec(), bad("invalid line ending")),
            ("non-token method", b"GE:T / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("invalid method or request-target")),
            ("NUL in method", b"GET\0 / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("invalid method or request-target")),
            ("non-ASCII method", "GETß / HTTP/1.1\r\nHost: h\r\n\r\n".as_bytes().to_vec(), bad("invalid method or request-target")),
            ("leading space before method", b" GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("invalid method or request-target")),
            ("relative target", b"GET foo/bar HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("invalid request-target")),
            ("authority-form without CONNECT", b"GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("invalid request-target")),
            ("CONNECT with origin-form", b"CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("CONNECT needs host:port")),
            ("CONNECT without port", b"CONNECT example.com HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("CONNECT needs host:port")),
            ("absolute-form without //", b"GET mailto:x HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), bad("invalid request-target")),
        ];
        for (what, req, want) in cases {
            assert_eq!(parse(req).map(|r| r.0), Err(*want), "{what}");
            // The same answer the whole head would get.
            let mut whole = req.to_vec();
            whole.extend_from_slice(b"Host: h\r\n\r\n");
            assert_eq!(parse(&whole).map(|r| r.0), Err(*want), "{what}, whole");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn limits() {
        let small = Limits {
            max_request_line: 20,
            max_headers: 2,
            max_field_size: 10,
            max_head: 60,
            max_body: 100,
            permit_obs_fold: false,
        };
        let cases: &[(&str, &[u8], Result<Parsed, HttpError>)] = &[
            // (what it guards, request, result under `small`)
            ("request line over the limit", b"GET /123456789012 HTTP/1.0\r\n\r\n", Err(UriTooLong)),
            ("request line exactly at the limit", b"GET /123456 HTTP/1.0\r\n\r\n", Ok(Parsed::Complete)),
            ("incomplete request line over the limit", b"GET /1234567890123456", Err(UriTooLong)),
            ("incomplete request line at the limit, CR pending", b"GET /123456 HTTP/1.0\r", Ok(Parsed::Partial)),
            ("field line over the limit (CRLF counts)", b"GET / HTTP/1.0\r\nA: 123456\r\n\r\n", Err(HeadersTooLarge)),
            ("field line exactly at the limit", b"GET / HTTP/1.0\r\nA: 12345\r\n\r\n", Ok(Parsed::Complete)),
            ("incomplete field line over the limit", b"GET / HTTP/1.0\r\nA: 123456", Err(HeadersTooLarge)),
            ("too many fields", b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", Err(HeadersTooLarge)),
            ("fields at the limit", b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\n\r\n", Ok(Parsed::Complete)),
            ("complete head over max_head", b"GET / HTTP/1.0\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\n\r\n", Err(HeadersTooLarge)),
            ("incomplete head over max_head", b"GET / HTTP/1.0\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\nA: 1\r\n", Err(HeadersTooLarge)),
            ("endless leading CRLFs count toward max_head", &[b'\r', b'\n'].repeat(31), Err(HeadersTooLarge)),
        ];
        for (what, req, want) in cases {
            assert_eq!(parse_with(req, &small).map(|r| r.0), *want, "{what}");
        }
        let body_limit = Limits {
            max_body: 100,
            ..Limits::default()
        };
        assert_eq!(
            parse_with(
                b"GET / HTTP/1.0\r\nContent-Length: 101\r\n\r\n",
                &body_limit
            )
            .map(|r| r.0),
            Err(BodyTooLarge),
            "Content-Length over max_body"
        );
        assert_eq!(
            parse_with(
                b"GET / HTTP/1.0\r\nContent-Length: 100\r\n\r\n",
                &body_limit
            )
            .map(|r| r.0),
            Ok(Parsed::Complete),
            "Content-Length at max_body"
        );
        // More headers than fit on the stack still parse when allowed.
        let many = Limits {
            max_headers: 150,
            ..Limits::default()
        };
        let req = get(&"A: 1\r\n".repeat(140));
        assert_eq!(parse_with(&req, &many).unwrap().1.headers.len(), 141);
        assert_eq!(parse(&req).map(|r| r.0), Err(HeadersTooLarge));
    }

    #[test]
    fn every_prefix_is_partial_and_the_whole_is_complete() {
        let req = b"\r\nPOST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        for end in 0..req.len() {
            assert_eq!(
                parse(&req[..end]).map(|r| r.0),
                Ok(Parsed::Partial),
                "{end}"
            );
        }
        assert_eq!(parse(req).unwrap().1.framing, Framing::Chunked);
    }

    #[test]
    fn helpers() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(parse_content_length(b"007"), Ok(7));
        assert!(is_tchar(b'~') && !is_tchar(b'"') && !is_tchar(b' '));
        assert!(is_ctl(0) && is_ctl(0x7f) && !is_ctl(b'\t') && !is_ctl(0x80));
        assert!(!has_ctl(b"text/html, */*;q=0.8\tand obs-text \xff"));
        for bad in [0u8, b'\r', b'\n', 0x1f, 0x7f] {
            let mut value = b"a value of some length, past one vector of 32 bytes".to_vec();
            value.push(bad);
            assert!(has_ctl(&value), "{bad:#x}");
        }
    }

    #[test]
    fn obs_fold_is_unfolded_in_place_only_when_permitted() {
        let permit = Limits {
            permit_obs_fold: true,
            ..Limits::default()
        };
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n two\r\n\tthree\r\nY: 1\r\n\r\n";
        let mut buf = raw.to_vec();
        let mut head = Head::default();
        assert_eq!(
            parse_head_unfolding(&mut buf, &permit, &mut head),
            Ok(Parsed::Complete)
        );
        let fields: Vec<(&[u8], &[u8])> = head
            .headers
            .iter()
            .map(|(n, v)| (&buf[n.clone()], &buf[v.clone()]))
            .collect();
        assert_eq!(fields[1], (&b"X"[..], &b"one   two  \tthree"[..]));
        assert_eq!(fields[2], (&b"Y"[..], &b"1"[..]));
        assert_eq!(head.len, raw.len());
        // Not permitted: refused, whichever function is used.
        let mut buf = raw.to_vec();
        assert_eq!(
            parse_head_unfolding(&mut buf, &Limits::default(), &mut head),
            Err(HttpError::BadRequest("obsolete line folding"))
        );
        // A partial head with a fold waits for the rest when permitted.
        let mut part = raw[..raw.len() - 10].to_vec();
        assert_eq!(
            parse_head_unfolding(&mut part, &permit, &mut head),
            Ok(Parsed::Partial)
        );
        // Whitespace before the first field continues nothing: still refused.
        let mut odd = b"GET / HTTP/1.1\r\n X: y\r\nHost: a\r\n\r\n".to_vec();
        assert!(parse_head_unfolding(&mut odd, &permit, &mut head).is_err());
    }

    #[test]
    fn the_first_broken_rule_decides_however_the_bytes_arrive() {
        // Found by the fuzzer: a long request line holding a bare CR was a 400
        // whole and a 414 when its first bytes arrived alone.
        let small = Limits {
            max_request_line: 20,
            max_field_size: 20,
            max_head: 200,
            ..Limits::default()
        };
        let cases: &[(&[u8], HttpError)] = &[
            (
                b"GET /0123456789012345678\rx HTTP/1.1\r\n\r\n",
                HttpError::UriTooLong,
            ),
            (
                b"GET /01\r23456789012345678 HTTP/1.1\r\n\r\n",
                HttpError::BadRequest("bare CR in head"),
            ),
            (
                b"GET / HTTP/1.1\r\nX: 0123456789012345678\n\r\n",
                HttpError::HeadersTooLarge,
            ),
            (
                b"GET / HTTP/1.1\r\nX: 01\n\r\n",
                HttpError::BadRequest("bare LF in head"),
            ),
        ];
        for &(req, want) in cases {
            let mut head = Head::default();
            assert_eq!(parse_head(req, &small, &mut head), Err(want), "whole");
            for cut in 1..=req.len() {
                let mut head = Head::default();
                let got = match parse_head(&req[..cut], &small, &mut head) {
                    Ok(Parsed::Partial) => continue,
                    other => other,
                };
                assert_eq!(
                    got,
                    Err(want),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(req)
                );
                break;
            }
        }
    }
}
