//! The listening sockets the master binds and its workers share: TCP or unix.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// One shared listening socket.
#[derive(Debug)]
pub enum Listening {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Where a listening socket listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// The socket's path; None for an unnamed or abstract one (passed in).
    Unix(Option<PathBuf>),
}

impl std::fmt::Display for ListenAddr {
    /// As gunicorn's "Listening at:" line names it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "http://{addr}"),
            ListenAddr::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            ListenAddr::Unix(None) => write!(f, "unix:(unnamed)"),
        }
    }
}

impl Listening {
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        Ok(match self {
            Listening::Tcp(l) => ListenAddr::Tcp(l.local_addr()?),
            Listening::Unix(l) => {
                ListenAddr::Unix(l.local_addr()?.as_pathname().map(|p| p.to_path_buf()))
            }
        })
    }

    pub fn try_clone(&self) -> io::Result<Listening> {
        Ok(match self {
            Listening::Tcp(l) => Listening::Tcp(l.try_clone()?),
            Listening::Unix(l) => Listening::Unix(l.try_clone()?),
        })
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Listening::Tcp(l) => l.set_nonblocking(on),
            Listening::Unix(l) => l.set_nonblocking(on),
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Listening::Unix(_))
    }
}

impl AsFd for Listening {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listening::Tcp(l) => l.as_fd(),
            Listening::Unix(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for Listening {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}
