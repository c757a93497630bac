//! A worker whose master died. Nothing supervises it any more: no timeout, no
//! stop. Left alone it would keep the port listening — new connections queued
//! and never answered, a restarted server unable to bind — for as long as its
//! request runs. A thread (the event loop may be inside the app) waits for the
//! master to exit, then shuts the listening sockets down for everyone at once,
//! asks the loop for a graceful stop, and ends the process if the request in
//! flight is still running after `limit`.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use ferricorn_signals::Listening;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

use log::{error, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, getppid, Pid};

/// Start the watch. `listeners` are copies of the worker's sockets (the thread
/// keeps them so that their fd numbers are never reused under it).
pub fn watch(master: Pid, listeners: Vec<Listening>, limit: Duration) -> io::Result<()> {
    let pidfd = pidfd_open(master)?;
    if getppid() != master {
        return Err(io::Error::other("the master exited before the watch began"));
    }
    std::thread::Builder::new()
        .name("master-watch".into())
        .spawn(move || {
            wait_for_exit(&pidfd);
            warn!(
                "the master (pid {master}) is gone: this worker stops listening and exits once its requests are done, within {}s",
                limit.as_secs()
            );
            for l in &listeners {
                let _ = socket2::SockRef::from(l).shutdown(std::net::Shutdown::Both);
            }
            // The loop's graceful stop (the death signal asks for it too; one more is harmless).
            let _ = kill(getpid(), Signal::SIGTERM);
            std::thread::sleep(limit);
            error!(
                "the master is gone and a request is still running after {}s; exiting",
                limit.as_secs()
            );
            exit_at_once(1);
        })?;
    Ok(())
}

fn wait_for_exit(pidfd: &OwnedFd) {
    loop {
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(n) if n > 0 => return,
            Err(nix::errno::Errno::EINTR) | Ok(_) => {}
            // Cannot watch after all: behave as before, when the loop alone reacted.
            Err(_) => loop {
                std::thread::park();
            },
        }
    }
}

/// A pidfd for `pid`: readable once that process has exited (Linux 5.3).
fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; it
    // touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// End the process without exit()'s atexit work: the app is running on
/// another thread, and tearing the runtime down under it is no safer.
fn exit_at_once(code: i32) -> ! {
    // SAFETY: _exit ends the process without running anything; it is always sound.
    unsafe { libc::_exit(code) }
}
