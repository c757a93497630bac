//! Turning what the app gives into HTTP/1.1 on the wire: framing, keep-alive,
//! HEAD and bodiless statuses.
//!
//! A body the app hands over whole (a list or tuple) is buffered until the app is
//! done, so that it goes out with a Content-Length in one write; past
//! [`COMMIT_AT`] bytes without a Content-Length from the app it is streamed. A
//! body the app makes as it goes (a generator, `write()`) is pushed to the client
//! block by block, before the app is asked for the next one ([`Responder::push`]),
//! chunked (HTTP/1.1) or close-delimited (HTTP/1.0) unless the app gave a
//! Content-Length.

use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stream::Stream;
use ferricorn_http::{
    write_chunk, write_chunk_size, write_error, write_head, write_last_chunk, HttpDate,
    ResponseFraming, ResponseHead,
};
use ferricorn_wsgi::ResponseSink;
use pyo3::types::{PyBytes, PyBytesMethods};
use pyo3::{Bound, Python};

use crate::outbuf::{OutBuf, Tail};
use crate::stream_body::StreamBody;

/// Bytes of body buffered before the head is committed without a known length.
pub const COMMIT_AT: usize = 64 * 1024;
/// Bytes of output queued before the worker waits for the client to take them.
const FLUSH_AT: usize = 256 * 1024;
/// A body chunk at least this large goes from the app's bytes object straight
/// to the socket, not through the output buffer (for a 1 MiB body: no copy).
const DIRECT_AT: usize = 64 * 1024;
/// How long a client may take nothing while the app streams to it.
pub const WRITE_STALL: Duration = Duration::from_secs(30);
/// A streaming app that took at least this long for its next block has the
/// connection checked for a client that left meanwhile (a write into a closed
/// connection succeeds until the peer's reset comes back).
const GONE_CHECK_AFTER: Duration = Duration::from_millis(20);

/// Buffers a worker loop lends each response and gets back, so that steady
/// traffic allocates nothing for them.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The body while it is small enough to go out with its head.
    body: Vec<u8>,
    head: HeadCopy,
}

/// The app's status and headers from start_response until the head is written.
#[derive(Debug, Default)]
struct HeadCopy {
    status: Vec<u8>,
    /// Entries past `len` are spare allocations from earlier responses.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    len: usize,
}

impl HeadCopy {
    fn set(&mut self, status: &[u8], headers: &[(Vec<u8>, Vec<u8>)]) {
        self.status.clear();
        self.status.extend_from_slice(status);
        if self.headers.len() < headers.len() {
            self.headers.resize_with(headers.len(), Default::default);
        }
        for ((name, value), (n, v)) in self.headers.iter_mut().zip(headers) {
            name.clear();
            name.extend_from_slice(n);
            value.clear();
            value.extend_from_slice(v);
        }
        self.len = headers.len();
    }

    fn headers(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.headers[..self.len]
    }
}

/// What the request allows.
#[derive(Clone, Copy)]
pub struct RequestInfo {
    pub head_request: bool,
    pub minor_version: u8,
    /// The client and the worker both allow reusing the connection.
    pub keep_alive: bool,
}

enum State {
    Waiting,
    /// The app's status and headers are in the scratch's [`HeadCopy`].
    Buffering {
        close: bool,
        app_len: Option<u64>,
        counted: u64,
    },
    Committed {
        framing: ResponseFraming,
        app_len: Option<u64>,
        sent: u64,
    },
}

pub struct Responder<'a> {
    py: Python<'a>,
    out: &'a mut OutBuf,
    sock: &'a mut Stream,
    date: &'a HttpDate,
    body: &'a mut Vec<u8>,
    head: &'a mut HeadCopy,
    info: RequestInfo,
    state: State,
    /// The connection may be reused after this response.
    pub keep_alive: bool,
    /// Something went wrong that a log line should mention.
    pub problem: Option<String>,
    /// For the access log: the status sent, body bytes sent, and (if the log
    /// format asks) the response headers.
    pub status: u16,
    pub body_bytes: u64,
    pub log_headers: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// A body the app reads from the client: unread body at commit time means
    /// the connection cannot be reused.
    pub stream: Option<Arc<Mutex<StreamBody>>>,
    /// The app's iteration may pause while the client catches up (not while
    /// the app is also reading the request body from the client).
    pub may_pause: bool,
    /// The socket is full and output is waiting: pause the app's iteration.
    full: bool,
    /// When the app's last block was pushed (streaming responses).
    pushed_at: Option<Instant>,
}

/// Where a paused response stands, kept with its connection (see
/// [`Responder::suspend`]).
pub struct Progress {
    pub info: RequestInfo,
    state: State,
    keep_alive: bool,
    problem: Option<String>,
    status: u16,
    body_bytes: u64,
    log_headers: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    pushed_at: Option<Instant>,
}

impl<'a> Responder<'a> {
    pub fn new(
        py: Python<'a>,
        out: &'a mut OutBuf,
        sock: &'a mut Stream,
        date: &'a HttpDate,
        scratch: &'a mut Scratch,
        info: RequestInfo,
    ) -> Self {
        let Scratch { body, head } = scratch;
        body.clear();
        let keep_alive = info.keep_alive;
        Responder {
            py,
            out,
            sock,
            date,
            body,
            head,
            info,
            state: State::Waiting,
            keep_alive,
            problem: None,
            status: 0,
            body_bytes: 0,
            log_headers: None,
            stream: None,
            may_pause: false,
            full: false,
            pushed_at: None,
        }
    }

    /// Put a paused response aside, to [`resume`](Self::resume) once its
    /// client has taken what was sent.
    pub fn suspend(self) -> Progress {
        Progress {
            info: self.info,
            state: self.state,
            keep_alive: self.keep_alive,
            problem: self.problem,
            status: self.status,
            body_bytes: self.body_bytes,
            log_headers: self.log_headers,
            pushed_at: self.pushed_at,
        }
    }

    /// Take up a suspended response where it stood (`self` is new, made with
    /// the same connection's buffers).
    pub fn resumed(mut self, p: Progress) -> Self {
        self.info = p.info;
        self.state = p.state;
        self.keep_alive = p.keep_alive;
        self.problem = p.problem;
        self.status = p.status;
        self.body_bytes = p.body_bytes;
        self.log_headers = p.log_headers;
        self.pushed_at = p.pushed_at;
        self.may_pause = true;
        self
    }

    /// The app finished normally: send what is buffered and end the body.
    pub fn finish(&mut self) -> io::Result<()> {
        if matches!(self.state, State::Buffering { .. }) {
            self.commit(false)?;
        }
        if let State::Committed {
            framing,
            app_len,
            sent,
        } = self.state
        {
            match framing {
                ResponseFraming::Chunked if !self.info.head_request => {
                    write_last_chunk(self.out.end())
                }
                ResponseFraming::Length(n)
                    if !self.info.head_request && app_len.is_some() && sent < n =>
                {
                    // The client would wait for bytes that never come: close instead.
                    self.problem = Some(format!("the app sent {sent} bytes but its Content-Length said {n}; closing the connection"));
                    self.keep_alive = false;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The app failed. Before the head went out, answer 500; after, the
    /// connection is closed so the client sees an incomplete response, never a
    /// second status line.
    pub fn fail(&mut self) {
        self.fail_with(500, "Internal Server Error");
    }

    /// As [`fail`](Self::fail), with another status for the client.
    pub fn fail_with(&mut self, status: u16, reason: &str) {
        self.keep_alive = false;
        match self.state {
            State::Committed { .. } => {}
            _ => {
                self.body.clear();
                write_error(self.out.end(), status, reason, self.date);
                self.status = status;
                self.body_bytes = reason.len() as u64 + 1;
                self.state = State::Committed {
                    framing: ResponseFraming::NoBody,
                    app_len: None,
                    sent: 0,
                };
            }
        }
    }

    fn commit(&mut self, streaming: bool) -> io::Result<()> {
        let len = self.body.len() as u64;
        self.commit_with_length(streaming, len)
    }

    /// Commit the head; `body_len` is the body's length when it is known up front.
    fn commit_with_length(&mut self, streaming: bool, body_len: u64) -> io::Result<()> {
        let State::Buffering {
            close,
            app_len,
            counted,
        } = std::mem::replace(&mut self.state, State::Waiting)
        else {
            return Ok(());
        };
        let code = self
            .head
            .status
            .get(..3)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(500);
        // A HEAD response says what the GET would: its length, when the whole body
        // was counted; how it would be framed, for a stream.
        let framing = if (100..200).contains(&code) || code == 204 || code == 304 {
            ResponseFraming::NoBody
        } else if let Some(n) = app_len {
            ResponseFraming::Length(n)
        } else if !streaming && self.info.head_request {
            ResponseFraming::Length(counted)
        } else if !streaming {
            ResponseFraming::Length(body_len)
        } else if self.info.minor_version >= 1 {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::Close
        };
        if let Some(stream) = &self.stream {
            let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
            s.final_sent = true;
            if !s.is_done() {
                self.keep_alive = false;
            }
        }
        self.keep_alive = self.keep_alive && !close && framing != ResponseFraming::Close;
        let head = ResponseHead {
            status: &self.head.status,
            headers: self.head.headers(),
            framing,
            keep_alive: self.keep_alive,
            http10_keep_alive: self.keep_alive && self.info.minor_version == 0,
        };
        write_head(self.out.end(), &head, self.date);
        self.state = State::Committed {
            framing,
            app_len,
            sent: 0,
        };
        let body = std::mem::take(self.body);
        let sent = self.emit(&body, None);
        *self.body = body;
        self.body.clear();
        sent
    }

    /// Body bytes; `owner`, when given, is the bytes object `data` is, which a
    /// large chunk is then sent from, by the event loop if the socket is full.
    fn emit(&mut self, data: &[u8], owner: Option<&Bound<'_, PyBytes>>) -> io::Result<()> {
        let State::Committed {
            framing,
            app_len,
            sent,
        } = &mut self.state
        else {
            return Ok(());
        };
        if self.info.head_request || *framing == ResponseFraming::NoBody || data.is_empty() {
            return Ok(());
        }
        let mut data = data;
        if let Some(limit) = *app_len {
            let room = limit.saturating_sub(*sent);
            if (data.len() as u64) > room {
                // Bytes past the declared length would be read as the next response.
                data = &data[..room as usize];
                self.problem = Some(format!("the app sent more bytes than its Content-Length ({limit}); the excess was dropped and the connection closed"));
                self.keep_alive = false;
            }
        }
        *sent += data.len() as u64;
        self.body_bytes += data.len() as u64;
        let chunked = *framing == ResponseFraming::Chunked;
        if data.len() >= DIRECT_AT {
            if self.out.has_tail() {
                // The app goes on after a large chunk: that one goes out first.
                self.out.flush_blocking(self.py, self.sock, WRITE_STALL)?;
            }
            if chunked {
                write_chunk_size(self.out.end(), data.len());
            }
            match owner {
                Some(bytes) if bytes.as_bytes().len() == data.len() => {
                    self.queue_tail(Tail::Bytes {
                        data: bytes.clone().unbind(),
                        pos: 0,
                        len: data.len(),
                    })?;
                }
                _ => {
                    self.out.flush_blocking(self.py, self.sock, WRITE_STALL)?;
                    OutBuf::write_through(self.sock, data, WRITE_STALL)?;
                }
            }
            if chunked {
                self.out.end().extend_from_slice(b"\r\n");
            }
            return Ok(());
        }
        if chunked {
            write_chunk(self.out.end(), data);
        } else {
            self.out.end().extend_from_slice(data);
        }
        Ok(())
    }
}

impl Responder<'_> {
    /// wsgi.file_wrapper over a regular file: the head, then the file's bytes by
    /// sendfile(2), never through user space, sent by the event loop as the
    /// client takes them.
    fn send_file(&mut self, fd: std::os::fd::RawFd, offset: u64, count: u64) -> io::Result<bool> {
        // sendfile(2) would put the file's plaintext on a TLS connection: the
        // app's file is iterated and encrypted instead.
        if self.sock.is_tls() {
            return Ok(false);
        }
        let State::Buffering { app_len, .. } = &self.state else {
            return Ok(false);
        };
        let Ok(start) = i64::try_from(offset) else {
            return Ok(false);
        };
        // Never more than the app's Content-Length, never more than the file has.
        let len = app_len.map_or(count, |n| n.min(count));
        if let State::Buffering { counted, .. } = &mut self.state {
            *counted = len; // what a HEAD response reports
        }
        self.commit_with_length(false, len)?;
        let State::Committed { framing, .. } = self.state else {
            return Ok(true);
        };
        if self.info.head_request || framing == ResponseFraming::NoBody || len == 0 {
            return Ok(true);
        }
        let file = crate::sendfile::dup_app_file(fd)?;
        self.body_bytes += len;
        if let State::Committed { sent, .. } = &mut self.state {
            *sent += len;
        }
        // A file that shrinks meanwhile ends the connection (the loop logs it).
        self.queue_tail(Tail::File {
            fd: file,
            offset: start,
            left: len,
        })?;
        Ok(true)
    }

    /// Send `tail` after what is queued, as far as the socket takes it now; the
    /// event loop sends the rest. An earlier tail must go out first.
    fn queue_tail(&mut self, tail: Tail) -> io::Result<()> {
        if self.out.has_tail() {
            self.out.flush_blocking(self.py, self.sock, WRITE_STALL)?;
        }
        self.out.set_tail(tail);
        self.out.flush(self.py, self.sock)?;
        Ok(())
    }
}

impl ResponseSink for Responder<'_> {
    fn sendfile(&mut self, fd: std::os::fd::RawFd, offset: u64, count: u64) -> io::Result<bool> {
        self.send_file(fd, offset, count)
    }

    fn start(&mut self, status: &[u8], headers: &[(Vec<u8>, Vec<u8>)], close: bool) {
        self.status = status
            .get(..3)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if let Some(log) = self.log_headers.as_mut() {
            *log = headers.to_vec();
        }
        let app_len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        self.head.set(status, headers);
        self.state = State::Buffering {
            close,
            app_len,
            counted: 0,
        };
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_body(data, None)
    }

    fn write_bytes(&mut self, chunk: &Bound<'_, PyBytes>) -> io::Result<()> {
        self.write_body(chunk.as_bytes(), Some(chunk))
    }

    fn paused(&self) -> bool {
        self.full
    }

    fn push(&mut self) -> io::Result<bool> {
        let complete = match self.state {
            State::Buffering {
                app_len: Some(n),
                counted,
                ..
            } => counted >= n,
            State::Committed {
                app_len: Some(n),
                sent,
                ..
            } => sent >= n,
            _ => false,
        };
        if complete {
            // Its Content-Length is reached: nothing can follow, so the loop may
            // send it with other answers (as a list's).
            return Ok(true);
        }
        let now = Instant::now();
        let slow = self
            .pushed_at
            .is_some_and(|t| now.saturating_duration_since(t) >= GONE_CHECK_AFTER);
        self.pushed_at = Some(now);
        if self.info.head_request {
            // No body goes out, so nothing waits for it: the whole body is counted
            // for the Content-Length, unless the app takes its time (a stream,
            // perhaps endless): then the head says how the GET would be framed, and
            // the iterable is asked for no more.
            if !slow {
                return Ok(true);
            }
            if matches!(self.state, State::Buffering { .. }) {
                self.commit(true)?;
            }
            return Ok(false);
        }
        if matches!(self.state, State::Buffering { .. }) {
            self.commit(true)?;
        }
        if slow && peer_hung_up(self.sock) {
            self.keep_alive = false;
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client closed the connection",
            ));
        }
        if self.may_pause {
            // A full socket pauses the iteration (the loop resumes it).
            self.full = !self.out.flush(self.py, self.sock)?;
        }
        if !self.may_pause || self.out.buffered() >= FLUSH_AT {
            // Nothing pauses the app while it calls write(): past this much, wait
            // for the client rather than buffer without bound.
            self.out.flush_blocking(self.py, self.sock, WRITE_STALL)?;
            self.full = false;
        }
        Ok(true)
    }
}

/// The client closed its side (or the connection broke), seen without reading:
/// what it might still send is a later request's, and a streamed answer to a
/// client that hung up is read by nobody.
fn peer_hung_up(sock: &Stream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let gone =
        PollFlags::from_bits_retain(libc::POLLRDHUP) | PollFlags::POLLHUP | PollFlags::POLLERR;
    let mut fds = [PollFd::new(sock.as_fd(), gone)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0].revents().is_some_and(|r| r.intersects(gone)),
        _ => false,
    }
}

impl Responder<'_> {
    fn write_body(&mut self, data: &[u8], owner: Option<&Bound<'_, PyBytes>>) -> io::Result<()> {
        match &mut self.state {
            State::Waiting => {}
            State::Buffering { counted, .. } => {
                *counted += data.len() as u64;
                if !self.info.head_request {
                    if self.body.len() + data.len() >= COMMIT_AT {
                        // Commit with what is buffered, then this chunk on its own
                        // (a large one is not copied into the buffer first).
                        self.commit(true)?;
                        self.emit(data, owner)?;
                    } else {
                        self.body.extend_from_slice(data);
                    }
                }
            }
            State::Committed { .. } => self.emit(data, owner)?,
        }
        let waiting = self.out.has_tail() || self.out.buffered() >= FLUSH_AT;
        if self.may_pause && waiting {
            // Rather than wait for this client, serve others meanwhile.
            self.full = !self.out.flush(self.py, self.sock)?;
        } else if self.out.buffered() >= FLUSH_AT {
            self.out.flush_blocking(self.py, self.sock, WRITE_STALL)?;
        }
        Ok(())
    }
}
