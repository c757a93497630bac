//! The master's only `unsafe`: fork, and taking descriptors inherited across `exec`.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use nix::unistd::{fork, ForkResult};

/// Fork the master.
///
/// Precondition (checked, with a warning): the process has exactly one thread, so no
/// lock can be held by a thread that would not exist in the child. The master never
/// starts threads: its logger writes synchronously and its signal handling is a
/// self-pipe polled by the loop.
pub fn fork_single_threaded() -> nix::Result<ForkResult> {
    // ferricorn's own master never has a second thread; with --preload, an app that
    // starts threads at import does (gunicorn's --preload pitfall): say so.
    if let Some(n) = thread_count().filter(|n| *n > 1) {
        log::warn!("forking a worker while the master runs {n} threads (started by the preloaded app?); those threads do not exist in the worker");
    }
    // SAFETY: single-threaded (see above), so the child is a consistent copy; the
    // caller blocks all signals around the call and the child resets handlers first.
    unsafe { fork() }
}

fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Take ownership of a listening socket inherited across `exec` (a binary upgrade,
/// or systemd's socket activation). Refuses an fd that is not an open, listening
/// TCP or unix stream socket, so a wrong `FERRICORN_LISTEN_FDS`, `LISTEN_FDS` or
/// `fd://N` cannot make this
/// process own a random descriptor.
pub fn adopt_listener(fd: std::os::fd::RawFd) -> std::io::Result<ferricorn_signals::Listening> {
    use std::os::fd::FromRawFd;
    // SAFETY: `fstat` only reads the descriptor table; an invalid fd is an error.
    let stat = nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("inherited fd {fd} is not a socket"),
        ));
    }
    // SAFETY: the fd is open and a socket (checked above), and it was handed to this
    // process to own: nothing else in this process refers to it.
    let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
    let refuse = |socket: socket2::Socket, why: &str| {
        std::mem::forget(socket); // not ours to close
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("inherited fd {fd} {why}"),
        ))
    };
    if !socket.is_listener()? {
        return refuse(socket, "is not a listening socket");
    }
    let unix = match (socket.domain()?, socket.r#type()?) {
        (socket2::Domain::IPV4 | socket2::Domain::IPV6, socket2::Type::STREAM) => false,
        (socket2::Domain::UNIX, socket2::Type::STREAM) => true,
        _ => return refuse(socket, "is not a TCP or unix stream socket"),
    };
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    Ok(if unix {
        ferricorn_signals::Listening::Unix(socket.into())
    } else {
        ferricorn_signals::Listening::Tcp(socket.into())
    })
}

/// Close `fd` if it is an open regular file: a scoreboard a binary before the
/// last exec left open, which would otherwise reach every worker (sockets, which
/// are all else an exec passes on, are left alone).
pub fn close_stale_file(fd: std::os::fd::RawFd) {
    // SAFETY: `fstat` only reads the descriptor table; an invalid fd is an error.
    let Ok(stat) = nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }) else {
        return;
    };
    if stat.st_mode & libc::S_IFMT == libc::S_IFREG {
        let _ = nix::unistd::close(fd);
    }
}
