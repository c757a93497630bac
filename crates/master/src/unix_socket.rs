//! `unix:PATH` binds: making the socket file, and removing it when the server
//! stops for good.
//!
//! What is at the path decides: nothing, or a socket nobody listens on (left by
//! a crash), and the socket is made there; a socket a live server answers on, or
//! anything that is not a socket, and the bind is refused with the file left
//! untouched. The file's mode is what the umask (`--umask`) leaves of 0777, and
//! with `--user` it is handed to the workers' user and group, as gunicorn does.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A socket file this server made: its path and identity, so that the file is
/// removed only if it is still that socket (not one another server made since).
#[derive(Debug, Clone)]
pub struct Made {
    path: PathBuf,
    /// Device, inode and change time: an inode number alone may be reused by
    /// the next file made there.
    id: (u64, u64, i64, i64),
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64, i64, i64) {
    (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
}

impl Made {
    /// The socket file now at `path`, taken as this server's (after an upgrade).
    pub fn claim(path: &Path) -> Option<Made> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        meta.file_type().is_socket().then(|| Made {
            path: path.to_path_buf(),
            id: identity(&meta),
        })
    }

    /// Remove the file if it is still the socket this server made.
    pub fn remove(&self) {
        let same = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && identity(&m) == self.id);
        if same {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The longest path a unix socket address holds (`sun_path` less its NUL).
const SUN_PATH_MAX: usize = 107;

/// Make and listen on a unix socket at `path`.
pub fn bind(
    path: &Path,
    backlog: i32,
    owner: Option<(u32, u32)>,
) -> io::Result<(UnixListener, Made)> {
    let len = path.as_os_str().len();
    if len > SUN_PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the path is {len} bytes; a unix socket's holds at most {SUN_PATH_MAX}"),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "something that is not a socket is there; it is left as it is",
            ))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "a running server listens on it",
                ))
            }
            // Left by a server that died: nobody answers there any more.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
            Err(e) => return Err(e),
        },
    }
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    let finish = || -> io::Result<Made> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        }
        socket.listen(backlog)?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        Made::claim(path).ok_or_else(|| io::Error::other("the socket file vanished"))
    };
    match finish() {
        Ok(made) => Ok((socket.into(), made)),
        Err(e) => {
            // Just made by this bind: nobody else's yet.
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("unix-socket-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_and_other_files_are_not() {
        let d = dir("replace");
        let path = d.join("s.sock");
        // Stale: bound, then its listener gone.
        drop(UnixListener::bind(&path).unwrap());
        let (live, made) = bind(&path, 16, None).unwrap();
        let err = bind(&path, 16, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(live);
        made.remove();
        assert!(!path.exists());

        let file = d.join("f");
        std::fs::write(&file, "keep").unwrap();
        let err = bind(&file, 16, None).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");

        let err = bind(&d.join("missing/s.sock"), 16, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let long = d.join("a".repeat(110));
        assert!(bind(&long, 16, None)
            .unwrap_err()
            .to_string()
            .contains("at most 107"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn removal_spares_a_socket_someone_else_made_since() {
        let d = dir("spare");
        let path = d.join("s.sock");
        let (first, made) = bind(&path, 16, None).unwrap();
        drop(first);
        std::fs::remove_file(&path).unwrap();
        let _other = UnixListener::bind(&path).unwrap();
        made.remove();
        assert!(path.exists(), "another server's socket is left alone");
        let _ = std::fs::remove_dir_all(&d);
    }
}
