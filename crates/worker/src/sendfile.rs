//! sendfile(2) from a file the app handed over (wsgi.file_wrapper) to a client socket.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;

/// Send `len` bytes of `file` from `offset`; returns how many went out (fewer only
/// when the file is shorter). Waits for the socket when it is full, up to `stall`.
pub fn send_file<S: AsFd>(
    sock: &S,
    file: RawFd,
    offset: u64,
    len: u64,
    stall: Duration,
) -> io::Result<u64> {
    // SAFETY: `file` is the descriptor of a file object the app returned; the worker
    // holds that object (and the GIL) for the whole call, so the fd stays open.
    let file = unsafe { BorrowedFd::borrow_raw(file) };
    let mut off =
        i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut sent = 0u64;
    while sent < len {
        let chunk = usize::try_from(len - sent)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match nix::sys::sendfile::sendfile64(sock.as_fd(), file, Some(&mut off), chunk) {
            Ok(0) => break,
            Ok(n) => sent += n as u64,
            Err(Errno::EAGAIN) => crate::outbuf::wait_writable(sock, stall)?,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}
