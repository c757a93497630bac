//! A connection's send buffer and the ways of emptying it.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

#[derive(Debug, Default)]
pub struct OutBuf {
    pub buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Write as much as the socket takes now. `Ok(true)` when everything is out.
    pub fn flush(&mut self, dst: &mut impl Write) -> io::Result<bool> {
        while self.pos < self.buf.len() {
            match dst.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.pos = 0;
        // A big response should not pin its memory to an idle connection.
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(true)
    }

    /// Write `data` (not through the buffer, which must be empty), waiting for
    /// the socket as [`flush_blocking`](Self::flush_blocking) does.
    pub fn write_through<S: Write + AsFd>(
        dst: &mut S,
        mut data: &[u8],
        stall: Duration,
    ) -> io::Result<()> {
        while !data.is_empty() {
            match dst.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(dst, stall)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Write everything, waiting for the socket when it is full; used while the
    /// app is producing a large body, when the worker is busy with this request
    /// anyway. Fails with `TimedOut` when the client takes nothing for `stall`.
    pub fn flush_blocking<S: Write + AsFd>(
        &mut self,
        dst: &mut S,
        stall: Duration,
    ) -> io::Result<()> {
        while !self.flush(dst)? {
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
