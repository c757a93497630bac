//! Taking over the file the app handed to wsgi.file_wrapper, for sendfile(2).
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

/// A descriptor of our own for the app's open file `fd`: the event loop sends
/// from it after the app has returned, and perhaps closed its file object.
pub fn dup_app_file(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: `fd` is the descriptor of a file object the app returned; the worker
    // holds that object (and the GIL) during this call, so the fd is open.
    let file = unsafe { BorrowedFd::borrow_raw(fd) };
    file.try_clone_to_owned()
}
