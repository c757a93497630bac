//! Binary upgrade (USR2) by re-executing in place.
//!
//! The master `exec`s the command it was started as — the `ferricorn` script, so a
//! newly installed version if one was installed there — with the same arguments,
//! environment and start directory. The listening sockets stay open across the exec (their fd numbers
//! are passed in `FERRICORN_LISTEN_FDS`), and the pid does not change, so the old
//! workers are still this process's children: the new master adopts them
//! (`FERRICORN_INHERITED_WORKERS`, with their slots in `FERRICORN_INHERITED_SLOTS`),
//! starts its own, and retires the old ones once its own are ready, as a reload
//! does. The scoreboard's memfd stays open too (`FERRICORN_SCOREBOARD_FD`), so the
//! new master reads the adopted workers' slots and `--timeout` covers them.
//! Because the pid stays, this works as PID 1
//! in a container and under systemd, and a pidfile stays valid (no `.2` file as
//! gunicorn needs for its second master).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::unistd::Pid;

use crate::listeners::Listener;

pub const LISTEN_FDS_ENV: &str = "FERRICORN_LISTEN_FDS";
/// Those of the listening fds that systemd passed (see `Listener::activated`).
pub const ACTIVATED_FDS_ENV: &str = "FERRICORN_ACTIVATED_FDS";
/// `pid,...`: what every binary so far reads, so a USR2 back to an older one
/// still adopts (and later retires) the workers.
pub const WORKERS_ENV: &str = "FERRICORN_INHERITED_WORKERS";
/// The same workers as `pid:slot:assigned_ms:flags,...` (flags: `r` ready, `t`
/// retiring), read in place of `WORKERS_ENV` when present.
pub const WORKER_SLOTS_ENV: &str = "FERRICORN_INHERITED_SLOTS";
pub const SCOREBOARD_FD_ENV: &str = "FERRICORN_SCOREBOARD_FD";
const HANDOVER_ENV: [&str; 5] = [
    LISTEN_FDS_ENV,
    ACTIVATED_FDS_ENV,
    WORKERS_ENV,
    WORKER_SLOTS_ENV,
    SCOREBOARD_FD_ENV,
];

/// How this process was started, captured before anything changes directory.
#[derive(Debug, Clone)]
pub struct StartInfo {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
}

impl StartInfo {
    /// `exe` run with `args` (argv[0] is `exe`), from the current directory.
    pub fn capture(exe: PathBuf, args: Vec<OsString>) -> io::Result<StartInfo> {
        Ok(StartInfo {
            exe,
            args,
            cwd: std::env::current_dir()?,
        })
    }
}

/// What the previous binary handed over.
#[derive(Debug)]
pub struct Inherited {
    pub listeners: Vec<Listener>,
    pub adopted: Adopted,
}

/// The previous binary's workers, and the scoreboard they write.
#[derive(Debug, Default)]
pub struct Adopted {
    pub workers: Vec<AdoptedWorker>,
    /// The scoreboard's memfd, open across the exec.
    pub scoreboard_fd: Option<RawFd>,
}

/// One worker as the previous master knew it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdoptedWorker {
    pub pid: Pid,
    pub slot: Option<usize>,
    pub assigned_ms: Option<u64>,
    pub ready: bool,
    pub retiring: bool,
}

impl AdoptedWorker {
    fn encode(&self) -> String {
        match (self.slot, self.assigned_ms) {
            (Some(slot), Some(ms)) => format!(
                "{}:{slot}:{ms}:{}{}",
                self.pid,
                if self.ready { "r" } else { "" },
                if self.retiring { "t" } else { "" }
            ),
            _ => self.pid.to_string(),
        }
    }

    /// One entry of `WORKER_SLOTS_ENV`, or of `WORKERS_ENV` (a bare pid: a
    /// serving worker without a slot); None if it is not one.
    fn decode(entry: &str) -> Option<AdoptedWorker> {
        let mut fields = entry.split(':');
        // Never 0 or negative: kill() would take those for a process group.
        let pid = Pid::from_raw(fields.next()?.parse().ok().filter(|p| *p > 0)?);
        let slot = fields.next().and_then(|s| s.parse().ok());
        let assigned_ms = fields.next().and_then(|s| s.parse().ok());
        // A bare pid was a serving worker (the old format listed no others).
        let flags = fields
            .next()
            .unwrap_or(if slot.is_none() { "r" } else { "" });
        Some(AdoptedWorker {
            pid,
            slot: slot.filter(|_| assigned_ms.is_some()),
            assigned_ms: assigned_ms.filter(|_| slot.is_some()),
            ready: flags.contains('r'),
            retiring: flags.contains('t'),
        })
    }
}

/// In a freshly exec'd master: take over the sockets and workers of the previous
/// binary, if it left any. The variables are removed so workers and the app never
/// see them.
pub fn take_inherited() -> io::Result<Option<Inherited>> {
    let Some(fds) = std::env::var_os(LISTEN_FDS_ENV) else {
        return Ok(None);
    };
    let var = |name| {
        std::env::var_os(name)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (pids, slots) = (var(WORKERS_ENV), var(WORKER_SLOTS_ENV));
    let activated = std::env::var_os(ACTIVATED_FDS_ENV).unwrap_or_default();
    let activated: Vec<&str> = activated.to_str().unwrap_or_default().split(',').collect();
    let scoreboard_fd = var(SCOREBOARD_FD_ENV).parse().ok();
    for name in HANDOVER_ENV {
        std::env::remove_var(name);
    }
    let mut listeners = Vec::new();
    for fd in fds.to_string_lossy().split(',').filter(|s| !s.is_empty()) {
        let fd: RawFd = fd.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{LISTEN_FDS_ENV}: `{fd}` is not an fd number"),
            )
        })?;
        let from_systemd = activated.contains(&fd.to_string().as_str());
        listeners.push(Listener::adopt(fd, from_systemd)?);
    }
    let adopted = Adopted::decode(&pids, &slots, scoreboard_fd);
    if let (Some(fd), None) = (scoreboard_fd, adopted.scoreboard_fd) {
        crate::sys::close_stale_file(fd);
    }
    Ok(Some(Inherited { listeners, adopted }))
}

impl Adopted {
    /// The workers `pids` names, with what `slots` says of them if it describes
    /// exactly those. An older binary exec'd in between (a USR2 back to it, then
    /// forward again) passes the variables it does not know on unchanged: then
    /// `slots` and the scoreboard are a former generation's, and are not used.
    fn decode(pids: &str, slots: &str, scoreboard_fd: Option<RawFd>) -> Adopted {
        let decode = |list: &str| -> Vec<AdoptedWorker> {
            list.split(',').filter_map(AdoptedWorker::decode).collect()
        };
        let (plain, detailed) = (decode(pids), decode(slots));
        let sorted = |ws: &[AdoptedWorker]| {
            let mut p: Vec<Pid> = ws.iter().map(|w| w.pid).collect();
            p.sort_unstable();
            p
        };
        if !detailed.is_empty() && sorted(&plain) == sorted(&detailed) {
            Adopted {
                workers: detailed,
                scoreboard_fd,
            }
        } else {
            Adopted {
                workers: plain,
                scoreboard_fd: None,
            }
        }
    }
}

/// Re-execute `start` keeping `listeners` and the `scoreboard` open and naming
/// `workers` for adoption; `restore` are variables this process took out of its
/// environment at start that the new image must find again (systemd's
/// `NOTIFY_SOCKET`).
/// Returns only if the exec failed; the process is then as it was.
///
/// Every signal is blocked across the exec (the mask survives it): the new image
/// starts with default dispositions, and a TERM landing before it has installed
/// its handlers would otherwise kill the master outright. The new master unblocks
/// once its handlers are in place. (std's `Command::exec` would clear the mask.)
pub fn exec(
    start: &StartInfo,
    listeners: &[Listener],
    workers: &[AdoptedWorker],
    scoreboard: Option<BorrowedFd<'_>>,
    restore: &[(OsString, OsString)],
) -> io::Error {
    let fds: Vec<String> = listeners
        .iter()
        .map(|l| l.socket.as_raw_fd().to_string())
        .collect();
    let activated: Vec<String> = listeners
        .iter()
        .filter(|l| l.activated)
        .map(|l| l.socket.as_raw_fd().to_string())
        .collect();
    let pids: Vec<String> = workers.iter().map(|w| w.pid.to_string()).collect();
    let slots: Vec<String> = workers.iter().map(AdoptedWorker::encode).collect();
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in the start command")
        })
    };
    let prepared = (|| -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let exe = cstr(start.exe.as_os_str().as_bytes())?;
        let mut argv = vec![exe.clone()];
        for a in &start.args {
            argv.push(cstr(a.as_bytes())?);
        }
        let mut env = Vec::new();
        let restored = restore.iter().map(|(k, v)| (k.clone(), v.clone()));
        for (k, v) in std::env::vars_os().chain(restored) {
            if !HANDOVER_ENV.iter().any(|h| k == *h) {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                env.push(cstr(&kv)?);
            }
        }
        env.push(cstr(
            format!("{LISTEN_FDS_ENV}={}", fds.join(",")).as_bytes(),
        )?);
        env.push(cstr(
            format!("{ACTIVATED_FDS_ENV}={}", activated.join(",")).as_bytes(),
        )?);
        env.push(cstr(
            format!("{WORKERS_ENV}={}", pids.join(",")).as_bytes(),
        )?);
        env.push(cstr(
            format!("{WORKER_SLOTS_ENV}={}", slots.join(",")).as_bytes(),
        )?);
        if let Some(fd) = scoreboard {
            env.push(cstr(
                format!("{SCOREBOARD_FD_ENV}={}", fd.as_raw_fd()).as_bytes(),
            )?);
        }
        Ok((exe, argv, env))
    })();
    let (exe, argv, env) = match prepared {
        Ok(p) => p,
        Err(e) => return e,
    };
    let keep_open: Vec<BorrowedFd<'_>> = listeners
        .iter()
        .map(|l| l.socket.as_fd())
        .chain(scoreboard)
        .collect();
    if let Err(e) = set_inheritable(&keep_open, true) {
        return e;
    }
    let here = std::env::current_dir().ok();
    let old_mask = ferricorn_signals::sys::block_all();
    let err = match std::env::set_current_dir(&start.cwd) {
        Ok(()) => match nix::unistd::execve(&exe, &argv, &env) {
            Err(e) => io::Error::from(e),
            Ok(never) => match never {},
        },
        Err(e) => e,
    };
    // Still here: undo what the attempt changed.
    if let Ok(mask) = old_mask {
        let _ = ferricorn_signals::sys::set_mask(&mask);
    }
    let _ = set_inheritable(&keep_open, false);
    if let Some(dir) = here {
        let _ = std::env::set_current_dir(dir);
    }
    err
}

fn set_inheritable(fds: &[BorrowedFd<'_>], inheritable: bool) -> io::Result<()> {
    let flags = if inheritable {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    for fd in fds {
        fcntl(fd, FcntlArg::F_SETFD(flags))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopted_workers_round_trip_and_old_entries_have_no_slot() {
        let w = AdoptedWorker {
            pid: Pid::from_raw(42),
            slot: Some(3),
            assigned_ms: Some(1234),
            ready: true,
            retiring: false,
        };
        assert_eq!(w.encode(), "42:3:1234:r");
        assert_eq!(AdoptedWorker::decode(&w.encode()), Some(w));
        let booting = AdoptedWorker::decode("7:0:5:t").unwrap();
        assert!(!booting.ready && booting.retiring);
        // From a binary that handed over pids only: serving, no slot.
        let old = AdoptedWorker::decode("42").unwrap();
        assert_eq!((old.slot, old.ready), (None, true));
        assert_eq!(AdoptedWorker::decode("42:3").unwrap().slot, None);
        assert_eq!(AdoptedWorker::decode("x:1:2:r"), None);
        assert_eq!(AdoptedWorker::decode("-1"), None);
        assert_eq!(AdoptedWorker::decode("0:1:2:r"), None);
    }

    #[test]
    fn slots_describing_other_workers_than_the_pids_are_not_used() {
        let fresh = Adopted::decode("7,8", "8:1:5:r,7:0:5:r", Some(9));
        assert_eq!(fresh.scoreboard_fd, Some(9));
        assert_eq!(fresh.workers[0].slot, Some(1));
        // Left over from before an exec of an older binary, which wrote new pids only.
        let stale = Adopted::decode("10,11", "7:0:5:r,8:1:5:r", Some(9));
        assert_eq!(stale.scoreboard_fd, None);
        let pids: Vec<i32> = stale.workers.iter().map(|w| w.pid.as_raw()).collect();
        assert_eq!(pids, [10, 11]);
        assert!(stale.workers.iter().all(|w| w.slot.is_none() && w.ready));
        assert!(Adopted::decode("", "", None).workers.is_empty());
    }
}
