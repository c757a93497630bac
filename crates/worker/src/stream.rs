//! A listening socket and a client connection of either kind, TCP or unix, for
//! the event loop: one type each, so that everything above them is the same. A
//! TLS connection (`--certfile`, TCP binds only) is a stream of its own kind:
//! its reads and writes are plaintext, and it has no raw-socket shortcuts
//! (sendfile, MSG_MORE).

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use ferricorn_signals::Listening;
use ferricorn_wsgi::{Local, Peer};
use mio::event::Source;
use mio::{Interest, Registry, Token};
use rustls::ServerConfig;

use crate::tls::TlsStream;

/// A listening socket, with its own address for the connections it accepts:
/// a wildcard TCP address is replaced by each connection's own.
pub enum Listener {
    Tcp(mio::net::TcpListener, std::net::SocketAddr),
    Unix(mio::net::UnixListener, Local),
}

pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
    Tls(Box<TlsStream>),
}

impl Listener {
    pub fn new(l: Listening) -> io::Result<Listener> {
        l.set_nonblocking(true)?;
        Ok(match l {
            Listening::Tcp(l) => {
                let addr = l.local_addr()?;
                Listener::Tcp(mio::net::TcpListener::from_std(l), addr)
            }
            Listening::Unix(l) => {
                let addr = l.local_addr()?;
                let path = addr
                    .as_pathname()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Listener::Unix(
                    mio::net::UnixListener::from_std(l),
                    Local::Unix(Arc::from(path)),
                )
            }
        })
    }

    /// A new connection: the stream, who connected, and where it came in. With
    /// `tls`, a TCP connection is a TLS one (its handshake comes with its first reads).
    pub fn accept(&self, tls: Option<&Arc<ServerConfig>>) -> io::Result<(Stream, Peer, Local)> {
        match self {
            Listener::Tcp(l, listening) => {
                let (sock, peer) = l.accept()?;
                // Small answers go out at once rather than wait for more.
                let _ = sock.set_nodelay(true);
                let local = if listening.ip().is_unspecified() {
                    sock.local_addr().unwrap_or(peer)
                } else {
                    *listening
                };
                let stream = match tls {
                    Some(config) => Stream::Tls(Box::new(TlsStream::new(sock, config)?)),
                    None => Stream::Tcp(sock),
                };
                Ok((stream, Peer::Ip(peer), Local::Ip(local)))
            }
            Listener::Unix(l, local) => {
                let (sock, _) = l.accept()?;
                Ok((Stream::Unix(sock), Peer::Unix, local.clone()))
            }
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Listener::Unix(..))
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l, _) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        }
    }
}

impl Stream {
    pub fn shutdown(&mut self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tls(s) => s.shutdown(how),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// A TLS connection whose handshake is not over.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.is_handshaking())
    }

    /// Write with MSG_MORE (more of this response follows at once), on a plain
    /// socket; a TLS stream has no such flag to give and writes as usual.
    pub fn write_more(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tls(s) => s.write(data),
            _ => socket2::SockRef::from(&*self).send_with_flags(data, libc::MSG_MORE),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
            Stream::Tls(s) => &mut s.tcp,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tls(s) => s.write_vectored(bufs),
        }
    }

    /// TLS output rustls still holds goes out (`WouldBlock` while the socket is full).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
            Stream::Tls(s) => s.tcp.as_fd(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Listener {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Listener::Tcp(l, _) => l,
            Listener::Unix(l, _) => l,
        }
    }
}

/// Each kind registers with the poll as its socket.
macro_rules! delegate_source {
    ($ty:ident) => {
        impl Source for $ty {
            fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                self.source().register(r, t, i)
            }
            fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
                self.source().reregister(r, t, i)
            }
            fn deregister(&mut self, r: &Registry) -> io::Result<()> {
                self.source().deregister(r)
            }
        }
    };
}
delegate_source!(Listener);
delegate_source!(Stream);
