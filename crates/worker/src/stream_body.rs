//! A request body read from the client while the app runs: for bodies larger
//! than `--body-buffer-size`, and for clients that wait for `100 Continue`.
//!
//! The worker is busy with this request anyway (a sync worker), so reads block,
//! with the body timeout as the limit on each wait. The app sees the client
//! failing as an exception from `wsgi.input` (see the wsgi crate's input.rs).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use ferricorn_http::{ChunkStatus, ChunkedDecoder, HttpError};
use ferricorn_wsgi::BodySource;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Most unread body the worker reads and drops after the app so the connection
/// can be reused; past this it closes instead.
const DRAIN_LIMIT: usize = 64 * 1024;
const RECV_STEP: usize = 64 * 1024;

enum Framing {
    /// Content-Length: bytes still to come from the socket.
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

/// Why the body could not be read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Disconnected,
    TimedOut,
    Bad(HttpError),
}

pub struct StreamBody {
    /// A duplicate of the connection's socket for the length of the request;
    /// `None` once the request is over (an app that kept `wsgi.input` gets an error).
    fd: Option<OwnedFd>,
    framing: Framing,
    /// Chunked: bytes received and not decoded yet. After the body, what is
    /// left here belongs to the next request.
    raw: Vec<u8>,
    /// Body bytes received and not handed out yet.
    decoded: Vec<u8>,
    /// The client waits for `100 Continue` before it sends the body.
    continue_pending: bool,
    /// The response head went out: too late for `100 Continue`.
    pub final_sent: bool,
    timeout: Duration,
    done: bool,
    pub failure: Option<Failure>,
}

impl StreamBody {
    /// `prefix` is what arrived with the head (raw, as on the wire).
    pub fn new(
        fd: OwnedFd,
        content_length: Option<u64>,
        chunked: Option<ChunkedDecoder>,
        prefix: Vec<u8>,
        decoded: Vec<u8>,
        expect_continue: bool,
        timeout: Duration,
    ) -> StreamBody {
        let (framing, raw, decoded) = match (content_length, chunked) {
            (_, Some(decoder)) => (Framing::Chunked(Box::new(decoder)), prefix, decoded),
            (n, None) => {
                let n = n.unwrap_or(0);
                let rest = n.saturating_sub(prefix.len() as u64);
                (Framing::Length(rest), Vec::new(), prefix)
            }
        };
        // `done`: nothing more of the body will come from the socket.
        let done = matches!(framing, Framing::Length(0));
        StreamBody {
            fd: Some(fd),
            framing,
            raw,
            decoded,
            continue_pending: expect_continue,
            final_sent: false,
            timeout,
            done,
            failure: None,
        }
    }

    /// The whole body was read (or dropped), so the connection can be reused.
    pub fn is_done(&self) -> bool {
        self.done && self.failure.is_none()
    }

    /// After the app: read and drop a little unread body without waiting, so a
    /// keep-alive connection survives an app that ignored a small body.
    pub fn settle(&mut self) -> bool {
        if self.done || self.failure.is_some() || self.continue_pending {
            return self.is_done();
        }
        let mut dropped = 0;
        let mut sink = Vec::new();
        while !self.done && dropped < DRAIN_LIMIT {
            sink.clear();
            match self.next(&mut sink, DRAIN_LIMIT - dropped, false) {
                Ok(0) => break,
                Ok(n) => dropped += n,
                Err(_) => break,
            }
        }
        self.is_done()
    }

    /// The request is over: stale `wsgi.input` objects must not touch the socket,
    /// which may carry the next request. Returns bytes that belong to it.
    pub fn detach(&mut self) -> Vec<u8> {
        self.fd = None;
        if self.done {
            std::mem::take(&mut self.raw)
        } else {
            Vec::new()
        }
    }

    /// The next body bytes into `out`; `wait`: block for the client.
    fn next(&mut self, out: &mut Vec<u8>, max: usize, wait: bool) -> io::Result<usize> {
        loop {
            if !self.decoded.is_empty() {
                let n = max.min(self.decoded.len());
                out.extend_from_slice(&self.decoded[..n]);
                self.decoded.drain(..n);
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            match &mut self.framing {
                Framing::Length(0) => {
                    self.done = true;
                    return Ok(0);
                }
                Framing::Length(rest) => {
                    let want = usize::try_from(*rest).unwrap_or(usize::MAX).min(max);
                    let n = self.recv(out, want, wait)?;
                    if let Framing::Length(rest) = &mut self.framing {
                        *rest -= n as u64;
                        self.done = *rest == 0;
                    }
                    return Ok(n);
                }
                Framing::Chunked(decoder) => {
                    if !self.raw.is_empty() {
                        let (used, status) =
                            decoder.decode(&self.raw, &mut self.decoded).map_err(|e| {
                                self.failure = Some(Failure::Bad(e));
                                io::Error::new(io::ErrorKind::InvalidData, e.reason())
                            })?;
                        self.raw.drain(..used);
                        self.done = status == ChunkStatus::Done;
                        continue;
                    }
                    let mut raw = std::mem::take(&mut self.raw);
                    let got = self.recv(&mut raw, RECV_STEP, wait);
                    self.raw = raw;
                    if got? == 0 {
                        return Ok(0); // nothing there and not waiting
                    }
                }
            }
        }
    }

    /// One read from the socket into `out` (at most `max` bytes, at least one,
    /// unless `wait` is false and nothing is there: then 0).
    fn recv(&mut self, out: &mut Vec<u8>, max: usize, wait: bool) -> io::Result<usize> {
        let Some(fd) = &self.fd else {
            return Err(io::Error::other(
                "the request is over; its body can no longer be read",
            ));
        };
        if self.continue_pending {
            if !wait {
                return Ok(0);
            }
            self.continue_pending = false;
            if !self.final_sent {
                if let Err(e) = write_all(fd, CONTINUE, self.timeout) {
                    self.failure = Some(Failure::Disconnected);
                    return Err(e);
                }
            }
        }
        let start = out.len();
        out.resize(start + max, 0);
        loop {
            match nix::unistd::read(fd, &mut out[start..]) {
                Ok(0) => {
                    out.truncate(start);
                    self.failure = Some(Failure::Disconnected);
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection before the request body was complete",
                    ));
                }
                Ok(n) => {
                    out.truncate(start + n);
                    return Ok(n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) if !wait => {
                    out.truncate(start);
                    return Ok(0);
                }
                Err(nix::errno::Errno::EAGAIN) => {
                    if !wait_for(fd, PollFlags::POLLIN, self.timeout)? {
                        out.truncate(start);
                        self.failure = Some(Failure::TimedOut);
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the client sent no request body for {} s",
                                self.timeout.as_secs_f64()
                            ),
                        ));
                    }
                }
                Err(e) => {
                    out.truncate(start);
                    self.failure = Some(Failure::Disconnected);
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, e));
                }
            }
        }
    }
}

impl BodySource for StreamBody {
    fn read(&mut self, out: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        self.next(out, max, true)
    }
}

/// Wait until `fd` is ready for `what`; false on timeout.
fn wait_for(fd: &OwnedFd, what: PollFlags, timeout: Duration) -> io::Result<bool> {
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), what)];
        match poll(&mut fds, timeout) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn write_all(fd: &OwnedFd, mut data: &[u8], timeout: Duration) -> io::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                if !wait_for(fd, PollFlags::POLLOUT, timeout)? {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading",
                    ));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
