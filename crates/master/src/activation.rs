//! Socket activation: listening sockets systemd opened and passed to this process
//! (fds from 3 on, `LISTEN_FDS` of them, for the pid in `LISTEN_PID`), as
//! sd_listen_fds(3) describes. systemd keeps them open across restarts of the
//! service, so connections that arrive while it restarts wait instead of being
//! refused.

use std::io;
use std::os::fd::RawFd;

use crate::listeners::Listener;

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The sockets systemd passed to this process, if any. The variables are removed
/// either way, as sd_listen_fds(3) does when asked to: workers, the app and the
/// processes it starts must not take the sockets for theirs.
pub fn take_activated() -> io::Result<Option<Vec<Listener>>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(None);
    };
    // Set for another process (a parent that passed its environment on): not ours.
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count: u16 = count.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS: `{count}` is not a number of sockets"),
        )
    })?;
    if count == 0 {
        // Activated, with no socket: bind as configured (sd_listen_fds gives 0).
        return Ok(None);
    }
    let listeners = (FIRST_FD..FIRST_FD + RawFd::from(count))
        .map(|fd| Listener::adopt(fd, true))
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Some(listeners))
}
