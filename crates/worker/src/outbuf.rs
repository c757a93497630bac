//! A connection's output and the ways of emptying it.
//!
//! Small output is copied into `buf`. A large piece (a file from
//! wsgi.file_wrapper, or a big bytes object from the app) is held as a [`Tail`]
//! and sent from where it is, by the event loop as the client takes it: the
//! worker serves other connections meanwhile instead of waiting for one slow
//! download to drain. Bytes queued after a tail wait in `after`.

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pyo3::types::PyBytes;
use pyo3::{Py, Python};

use crate::stream::Stream;

/// A large piece of output sent without being copied into the buffer.
#[derive(Debug)]
pub enum Tail {
    /// `left` bytes of a regular file from `offset`, by sendfile(2). The
    /// descriptor is our own duplicate: the app may close its file at once.
    File { fd: OwnedFd, offset: i64, left: u64 },
    /// A bytes object of the app's, from `pos`: immutable, kept alive by the reference.
    Bytes {
        data: Py<PyBytes>,
        pos: usize,
        len: usize,
    },
}

impl Tail {
    fn left(&self) -> usize {
        match self {
            Tail::File { left, .. } => usize::try_from(*left).unwrap_or(usize::MAX),
            Tail::Bytes { pos, len, .. } => len - pos,
        }
    }

    /// Send what the socket takes now. `Ok(true)` when all is out.
    fn send<S: Write + AsFd>(&mut self, py: Python<'_>, dst: &mut S) -> io::Result<bool> {
        loop {
            match self {
                Tail::File { fd, offset, left } => {
                    if *left == 0 {
                        return Ok(true);
                    }
                    let chunk = usize::try_from(*left).unwrap_or(usize::MAX).min(1 << 30);
                    match nix::sys::sendfile::sendfile64(dst.as_fd(), &*fd, Some(offset), chunk) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("the file ended with {left} bytes of the response unsent"),
                            ))
                        }
                        Ok(n) => *left -= n as u64,
                        Err(Errno::EAGAIN) => return Ok(false),
                        Err(Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Tail::Bytes { data, pos, .. } => {
                    let bytes = data.as_bytes(py);
                    if *pos == bytes.len() {
                        return Ok(true);
                    }
                    match dst.write(&bytes[*pos..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => *pos += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
    tail: Option<Tail>,
    after: Vec<u8>,
}

impl OutBuf {
    /// Where output goes now: after everything already queued.
    pub fn end(&mut self) -> &mut Vec<u8> {
        if self.tail.is_some() {
            &mut self.after
        } else {
            &mut self.buf
        }
    }

    /// Bytes copied in and not yet sent (a tail is not a copy).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos + self.after.len()
    }

    /// Everything not yet sent, a tail included.
    pub fn pending(&self) -> usize {
        self.buffered() + self.tail.as_ref().map_or(0, Tail::left)
    }

    pub fn has_tail(&self) -> bool {
        self.tail.is_some()
    }

    /// Queue `tail` after what is queued. There can be one tail: an earlier one
    /// must be out first (see [`flush_blocking`](Self::flush_blocking)).
    pub fn set_tail(&mut self, tail: Tail) {
        debug_assert!(self.tail.is_none() && self.after.is_empty());
        self.tail = Some(tail);
    }

    /// Write as much as the socket takes now. `Ok(true)` when everything is out.
    pub fn flush(&mut self, py: Python<'_>, dst: &mut Stream) -> io::Result<bool> {
        loop {
            while self.pos < self.buf.len() {
                let rest = &self.buf[self.pos..];
                // A head before a tail: let the kernel fill its packet with the body.
                let written = if self.tail.is_some() {
                    dst.write_more(rest)
                } else {
                    dst.write(rest)
                };
                match written {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.buf.clear();
            self.pos = 0;
            let Some(tail) = self.tail.as_mut() else {
                break;
            };
            if !tail.send(py, dst)? {
                return Ok(false);
            }
            self.tail = None;
            std::mem::swap(&mut self.buf, &mut self.after);
        }
        // A TLS stream may still hold encrypted output.
        match dst.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            r => r?,
        }
        // A big response should not pin its memory to an idle connection.
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        if self.after.capacity() > 1 << 20 {
            self.after = Vec::new();
        }
        Ok(true)
    }

    /// Write `data` (not through the buffer, which must be empty), waiting for
    /// the socket as [`flush_blocking`](Self::flush_blocking) does.
    pub fn write_through(dst: &mut Stream, mut data: &[u8], stall: Duration) -> io::Result<()> {
        while !data.is_empty() {
            match dst.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(dst, stall)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        loop {
            match dst.flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(dst, stall)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// Write everything, a tail included, waiting for the socket when it is
    /// full; used while the app is producing a body, when the worker is busy
    /// with this request anyway. Fails with `TimedOut` when the client takes
    /// nothing for `stall`.
    pub fn flush_blocking(
        &mut self,
        py: Python<'_>,
        dst: &mut Stream,
        stall: Duration,
    ) -> io::Result<()> {
        while !self.flush(py, dst)? {
            wait_writable(dst, stall)?;
        }
        Ok(())
    }
}

/// Wait until `dst` takes more; `TimedOut` when it takes nothing for `stall`.
pub fn wait_writable<S: AsFd>(dst: &S, stall: Duration) -> io::Result<()> {
    let timeout = PollTimeout::try_from(stall).unwrap_or(PollTimeout::MAX);
    loop {
        let mut fds = [PollFd::new(dst.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, timeout) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client stopped reading",
                ))
            }
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
