//! Telling systemd how the service is doing: the notify protocol of sd_notify(3).
//!
//! When systemd starts a `Type=notify` (or `notify-reload`) service it sets
//! `NOTIFY_SOCKET` to a unix datagram socket (a path, or `@name` in the abstract
//! namespace) and reads one datagram per message: newline-separated `KEY=VALUE`
//! lines such as `READY=1`, `STATUS=…`, `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`.
//! With `WatchdogSec=` it also sets `WATCHDOG_USEC` (and `WATCHDOG_PID`, the process
//! the watchdog is meant for) and expects `WATCHDOG=1` at least that often.
//!
//! The master takes the variables at start and removes them, so workers, the app and
//! whatever the app starts never talk to systemd in its name; an upgrade hands them
//! to the new image in its exec's environment ([`Notifier::exec_env`]). Sends never
//! block the master: the socket is non-blocking and a message that does not fit is
//! dropped. A socket that cannot be reached gets one warning, and serving goes on.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use log::{debug, warn};
use nix::time::{clock_gettime, ClockId};

/// The variables systemd sets for the notify protocol (taken from the environment).
pub const ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// The master's side of the notify protocol. The default tells nobody anything.
#[derive(Default)]
pub struct Notifier {
    peer: Option<Peer>,
    watchdog: Option<Watchdog>,
    /// The variables as they were found, for the exec of an upgrade.
    env: Vec<(OsString, OsString)>,
    /// The last `STATUS=` sent (statuses are sent only when they change).
    status: String,
    /// `READY=1` is due: at start, and after `RELOADING=1`, until it is sent.
    owes_ready: bool,
    /// `READY=1` was sent at least once by this image.
    was_ready: bool,
}

struct Peer {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for messages.
    name: String,
    /// The last send failed, and said so: the next failure is quiet.
    warned: bool,
}

struct Watchdog {
    /// Half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises.
    every: Duration,
    next: Instant,
}

impl Notifier {
    /// Take `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` out of the
    /// environment. Call while single-threaded (it changes the environment), after
    /// the logger is set up (a socket that cannot be used is warned of).
    pub fn from_env() -> Notifier {
        let env: Vec<(OsString, OsString)> = ENV
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v)))
            .collect();
        for k in ENV {
            std::env::remove_var(k);
        }
        let var = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        let Some(name) = var("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
            return Notifier::default();
        };
        let peer = match Peer::open(&name) {
            Ok(peer) => peer,
            Err(e) => {
                warn!("cannot notify systemd at NOTIFY_SOCKET={name}: {e}; serving without telling it");
                return Notifier {
                    env,
                    ..Notifier::default()
                };
            }
        };
        let watchdog = watchdog_interval(
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
        .map(|every| Watchdog {
            every,
            next: Instant::now(),
        });
        let mut notifier = Notifier {
            peer: Some(peer),
            watchdog,
            env,
            status: String::new(),
            owes_ready: true,
            was_ready: false,
        };
        // At once: start-up can take a while (hooks, --preload), and a socket that
        // cannot be reached is warned of now rather than at READY.
        notifier.status("Starting");
        notifier
    }

    /// Whether anyone is told anything (callers skip composing a status if not).
    pub fn is_active(&self) -> bool {
        self.peer.is_some()
    }

    /// Whether `READY=1` is due (at start, or since a reload began).
    pub fn owes_ready(&self) -> bool {
        self.owes_ready
    }

    /// Whether this image said `READY=1` yet: if not, a stop is a failed start.
    pub fn was_ready(&self) -> bool {
        self.was_ready
    }

    /// The service is up (or up again after a reload): `READY=1` with the master's pid.
    pub fn ready(&mut self, status: &str) {
        self.owes_ready = false;
        self.was_ready = true;
        let pid = std::process::id();
        self.send_with_status(&format!("READY=1\nMAINPID={pid}\n"), status);
    }

    /// A reload begins: `RELOADING=1` with the time it began, which
    /// `Type=notify-reload` matches against the reload it asked for.
    /// Before the first `READY=1` there is nothing to reload in systemd's eyes:
    /// the `READY=1` still owed covers the reload.
    pub fn reloading(&mut self, status: &str) {
        if !self.was_ready {
            return self.status(status);
        }
        self.owes_ready = true;
        let usec = monotonic_usec();
        self.send_with_status(&format!("RELOADING=1\nMONOTONIC_USEC={usec}\n"), status);
    }

    /// A stop begins.
    pub fn stopping(&mut self, status: &str) {
        self.send_with_status("STOPPING=1\n", status);
    }

    /// What a person reads in `systemctl status`; sent only when it changed.
    pub fn status(&mut self, status: &str) {
        if status != self.status {
            self.send_with_status("", status);
        }
    }

    /// The last word of a start that failed: why, and the errno if there is one.
    pub fn failed(&mut self, status: &str, errno: Option<i32>) {
        let errno = errno.map(|e| format!("ERRNO={e}\n")).unwrap_or_default();
        self.send_with_status(&errno, status);
    }

    /// When the next `WATCHDOG=1` is due, if systemd watches this process.
    pub fn watchdog_due(&self) -> Option<Instant> {
        self.watchdog.as_ref().map(|w| w.next)
    }

    /// Called on every turn of the master loop: `WATCHDOG=1` if it is due. A loop
    /// that stops turning stops sending, and systemd acts on that.
    pub fn watchdog(&mut self, now: Instant) {
        let Some(w) = self.watchdog.as_mut() else {
            return;
        };
        if now < w.next {
            return;
        }
        w.next = now + w.every;
        self.send("WATCHDOG=1");
    }

    /// The variables to put back into the environment of an upgrade's exec, so the
    /// new image notifies the same socket.
    pub fn exec_env(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    fn send_with_status(&mut self, fields: &str, status: &str) {
        // One line per field: a newline inside the text would start another.
        let status = status.replace('\n', " ");
        self.send(&format!("{fields}STATUS={status}"));
        self.status = status;
    }

    fn send(&mut self, message: &str) {
        let Some(peer) = self.peer.as_mut() else {
            return;
        };
        match peer.socket.send_to_addr(message.as_bytes(), &peer.addr) {
            Ok(_) => peer.warned = false,
            // The receiver's queue is full: this message is dropped, the next may fit.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                debug!("NOTIFY_SOCKET={} is full; dropped: {message:?}", peer.name);
            }
            Err(e) => {
                if !peer.warned {
                    warn!(
                        "cannot notify systemd at NOTIFY_SOCKET={}: {e}; serving goes on without telling it",
                        peer.name
                    );
                    peer.warned = true;
                }
            }
        }
    }
}

impl Peer {
    fn open(name: &str) -> io::Result<Peer> {
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes())?,
            None if name.starts_with('/') => {
                SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name.as_bytes()))?
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an absolute path or an @abstract name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Peer {
            socket,
            addr,
            name: name.to_string(),
            warned: false,
        })
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, if it is set, positive,
/// and meant for this process (`WATCHDOG_PID` unset or equal to `pid`).
fn watchdog_interval(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(for_pid) = for_pid {
        if for_pid.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd's `MONOTONIC_USEC=` is read on.
fn monotonic_usec() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1_000,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_for_this_pid_only() {
        let half = Some(Duration::from_millis(100));
        assert_eq!(watchdog_interval(Some("200000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("200000"), Some("7"), 7), half);
        // Meant for another process (a parent that passed its environment on).
        assert_eq!(watchdog_interval(Some("200000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn monotonic_usec_is_the_monotonic_clock() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
    }
}
