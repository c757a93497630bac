//! `-p/--pid FILE`: the master's pid, written atomically, removed at exit.

use std::io::{self, Write};
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
    /// Write `pid` to `path` via a temporary file and a rename, so a reader never
    /// sees a half-written number. Refuses when the file names another live process.
    pub fn create(path: &Path, pid: u32) -> Result<Pidfile, PidfileError> {
        let shown = path.display().to_string();
        if let Some(other) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            if other != pid as i32 && other > 0 && kill(Pid::from_raw(other), None).is_ok() {
                return Err(PidfileError::Running {
                    path: shown,
                    pid: other,
                });
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
        let tmp = dir.join(format!(
            ".{}.{pid}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let mut f = std::fs::File::create(&tmp).map_err(io_err)?;
        f.write_all(format!("{pid}\n").as_bytes()).map_err(io_err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(e)
        })?;
        Ok(Pidfile {
            path: path.to_path_buf(),
            pid,
        })
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
