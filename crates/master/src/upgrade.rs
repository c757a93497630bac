//! Binary upgrade (USR2) by re-executing in place.
//!
//! The master `exec`s the command it was started as — the `ferricorn` script, so a
//! newly installed version if one was installed there — with the same arguments,
//! environment and start directory. The listening sockets stay open across the exec (their fd numbers
//! are passed in `FERRICORN_LISTEN_FDS`), and the pid does not change, so the old
//! workers are still this process's children: the new master adopts them
//! (`FERRICORN_INHERITED_WORKERS`), starts its own, and retires the old ones once
//! its own are ready, as a reload does. Because the pid stays, this works as PID 1
//! in a container and under systemd, and a pidfile stays valid (no `.2` file as
//! gunicorn needs for its second master).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::unistd::Pid;

use crate::listeners::Listener;

pub const LISTEN_FDS_ENV: &str = "FERRICORN_LISTEN_FDS";
/// Those of the listening fds that systemd passed (see `Listener::activated`).
pub const ACTIVATED_FDS_ENV: &str = "FERRICORN_ACTIVATED_FDS";
pub const WORKERS_ENV: &str = "FERRICORN_INHERITED_WORKERS";

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
    pub workers: Vec<Pid>,
}

/// In a freshly exec'd master: take over the sockets and workers of the previous
/// binary, if it left any. The variables are removed so workers and the app never
/// see them.
pub fn take_inherited() -> io::Result<Option<Inherited>> {
    let Some(fds) = std::env::var_os(LISTEN_FDS_ENV) else {
        return Ok(None);
    };
    let workers = std::env::var_os(WORKERS_ENV).unwrap_or_default();
    let activated = std::env::var_os(ACTIVATED_FDS_ENV).unwrap_or_default();
    let activated: Vec<&str> = activated.to_str().unwrap_or_default().split(',').collect();
    std::env::remove_var(LISTEN_FDS_ENV);
    std::env::remove_var(ACTIVATED_FDS_ENV);
    std::env::remove_var(WORKERS_ENV);
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
    let workers = workers
        .to_string_lossy()
        .split(',')
        .filter_map(|p| p.parse().ok())
        .map(Pid::from_raw)
        .collect();
    Ok(Some(Inherited { listeners, workers }))
}

/// Re-execute `start` keeping `listeners` open and naming `workers` for adoption;
/// `restore` are variables this process took out of its environment at start that
/// the new image must find again (systemd's `NOTIFY_SOCKET`).
/// Returns only if the exec failed; the process is then as it was.
///
/// Every signal is blocked across the exec (the mask survives it): the new image
/// starts with default dispositions, and a TERM landing before it has installed
/// its handlers would otherwise kill the master outright. The new master unblocks
/// once its handlers are in place. (std's `Command::exec` would clear the mask.)
pub fn exec(
    start: &StartInfo,
    listeners: &[Listener],
    workers: &[Pid],
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
    let pids: Vec<String> = workers.iter().map(|p| p.to_string()).collect();
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
            if k != LISTEN_FDS_ENV && k != ACTIVATED_FDS_ENV && k != WORKERS_ENV {
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
        Ok((exe, argv, env))
    })();
    let (exe, argv, env) = match prepared {
        Ok(p) => p,
        Err(e) => return e,
    };
    if let Err(e) = set_inheritable(listeners, true) {
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
    let _ = set_inheritable(listeners, false);
    if let Some(dir) = here {
        let _ = std::env::set_current_dir(dir);
    }
    err
}

fn set_inheritable(listeners: &[Listener], inheritable: bool) -> io::Result<()> {
    let flags = if inheritable {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    for l in listeners {
        fcntl(&l.socket, FcntlArg::F_SETFD(flags))?;
    }
    Ok(())
}
