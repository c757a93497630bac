//! The master's only `unsafe`: fork.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use nix::unistd::{fork, ForkResult};

/// Fork the master.
///
/// Precondition (checked in debug builds): the process has exactly one thread, so no
/// lock can be held by a thread that would not exist in the child. The master never
/// starts threads: its logger writes synchronously and its signal handling is a
/// self-pipe polled by the loop.
pub fn fork_single_threaded() -> nix::Result<ForkResult> {
    debug_assert_eq!(
        thread_count(),
        Some(1),
        "the master forked while running more than one thread"
    );
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
