//! `-p/--pid FILE`: the master's pid, written atomically, removed at exit.
//!
//! The number goes to a temporary file beside the pidfile, created under a name
//! nobody can predict and with `O_CREAT|O_EXCL|O_NOFOLLOW` (a symlink planted in a
//! directory the service user owns is never followed, so root never writes through
//! it), then renamed over the pidfile (which replaces a symlink there, not its
//! target). A pidfile left by a crash is judged by whether its pid is a ferricorn
//! master now, not merely alive: pids are reused.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

#[derive(Debug)]
pub struct Pidfile {
    path: PathBuf,
    pid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    #[error("invalid value `{path}` for `pidfile` (from --pid): ferricorn is already running there as pid {pid}")]
    Running { path: String, pid: i32 },
    #[error("invalid value `{path}` for `pidfile` (from --pid): {source}")]
    Io { path: String, source: io::Error },
}

impl Pidfile {
    /// Write `pid` to `path` (see the module docs). Refuses when the file names
    /// another ferricorn master that is running; a pid of anything else is stale
    /// and the file is replaced (`stale` says so, for the log).
    pub fn create(path: &Path, pid: u32) -> Result<(Pidfile, Option<i32>), PidfileError> {
        let shown = path.display().to_string();
        let mut stale = None;
        if let Some(other) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if other != pid as i32 && other > 0 && kill(Pid::from_raw(other), None).is_ok() {
                if is_ferricorn(other) {
                    return Err(PidfileError::Running {
                        path: shown,
                        pid: other,
                    });
                }
                stale = Some(other);
            }
        }
        let io_err = |source| PidfileError::Io {
            path: shown.clone(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (tmp, mut f) = create_unique(dir, &name).map_err(io_err)?;
        let written = f
            .write_all(format!("{pid}\n").as_bytes())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        Ok((
            Pidfile {
                path: path.to_path_buf(),
                pid,
            },
            stale,
        ))
    }

    /// Remove the file if it still holds our pid (a newer master may own it now).
    pub fn remove(&self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            == Some(self.pid);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A new file `.NAME.RANDOM.tmp` in `dir`, never an existing path or a symlink.
fn create_unique(dir: &Path, name: &str) -> io::Result<(PathBuf, std::fs::File)> {
    let mut random = [0u8; 8];
    for _ in 0..16 {
        std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", u64::from_ne_bytes(random)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "cannot create a temporary file beside it",
    ))
}

/// Whether `pid` runs ferricorn: its command line is the `ferricorn` command, or
/// `python -m ferricorn`, or has the title `--name` gives a master.
fn is_ferricorn(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    cmdline.split(|&b| b == 0).any(|arg| {
        arg == b"ferricorn" || arg.ends_with(b"/ferricorn") || arg.starts_with(b"ferricorn: master")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ferricorn-pidfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_symlink_planted_where_a_temporary_file_would_go_is_not_followed() {
        // The old scheme's name, `.NAME.PID.tmp`, could be guessed and planted.
        let dir = scratch("plant");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".app.pid.4242.tmp")).unwrap();
        let path = dir.join("app.pid");
        // A symlink as the pidfile itself is replaced, not written through.
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let (_pidfile, stale) = Pidfile::create(&path, 4242).unwrap();
        assert_eq!(stale, None);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_live_pid_that_is_not_ferricorn_is_stale() {
        // This test process is alive and is not ferricorn.
        let dir = scratch("stale");
        let path = dir.join("app.pid");
        let me = std::process::id() as i32;
        std::fs::write(&path, format!("{me}\n")).unwrap();
        let (_pidfile, stale) = Pidfile::create(&path, 4243).unwrap();
        assert_eq!(stale, Some(me));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4243\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
