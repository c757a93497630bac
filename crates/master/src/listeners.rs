//! Binding the listening sockets the workers share.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use ferricorn_config::Bind;
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};
use socket2::{Domain, Protocol, Socket, Type};

sockopt_impl!(
    /// Linux's TCP_DEFER_ACCEPT (seconds), which nix does not name.
    TcpDeferAccept,
    Both,
    libc::IPPROTO_TCP,
    libc::TCP_DEFER_ACCEPT,
    libc::c_int
);

/// How long the kernel holds a connection that has sent nothing before handing
/// it over anyway (it then counts the header timeout from there).
const DEFER_ACCEPT_SECONDS: libc::c_int = 1;

/// A bound, listening, non-blocking socket shared by all workers.
#[derive(Debug)]
pub struct Listener {
    pub socket: TcpListener,
    pub addr: SocketAddr,
    /// Passed by systemd (socket activation), which keeps it open across this
    /// server's restarts: connections that arrive meanwhile wait in its queue for
    /// the next start, so it is never shut down, and its options are the unit's.
    pub activated: bool,
}

impl Listener {
    /// A listening socket this process was handed as `fd` (see `sys::adopt_listener`).
    pub fn adopt(fd: std::os::fd::RawFd, activated: bool) -> io::Result<Listener> {
        let socket = crate::sys::adopt_listener(fd)?;
        let addr = socket.local_addr()?;
        Ok(Listener {
            socket,
            addr,
            activated,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot resolve `{bind}`: {source}")]
    Resolve { bind: String, source: io::Error },
    #[error("cannot bind {addr} (from `{bind}`): {source}")]
    Bind {
        bind: String,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// Bind every address of every `Bind` (a host name may resolve to several).
pub fn bind_all(
    binds: &[Bind],
    backlog: i32,
    reuse_port: bool,
    defer_accept: bool,
) -> Result<Vec<Listener>, BindError> {
    let mut out: Vec<Listener> = Vec::new();
    for (bind, addr) in resolve(binds)? {
        if out.iter().any(|l| l.addr == addr) {
            continue;
        }
        let socket =
            listen(addr, backlog, reuse_port, defer_accept).map_err(|source| BindError::Bind {
                bind: bind.to_string(),
                addr,
                source,
            })?;
        let addr = socket.local_addr().unwrap_or(addr);
        out.push(Listener {
            socket,
            addr,
            activated: false,
        });
    }
    Ok(out)
}

/// Every address of every `Bind`, with the bind it came from.
fn resolve(binds: &[Bind]) -> Result<Vec<(&Bind, SocketAddr)>, BindError> {
    let mut out = Vec::new();
    for bind in binds {
        let Bind::Tcp { host, port } = bind;
        let addrs =
            (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|source| BindError::Resolve {
                    bind: bind.to_string(),
                    source,
                })?;
        out.extend(addrs.map(|addr| (bind, addr)));
    }
    Ok(out)
}

fn listen(
    addr: SocketAddr,
    backlog: i32,
    reuse_port: bool,
    defer_accept: bool,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarts must not wait for TIME_WAIT connections of the previous process.
    socket.set_reuse_address(true)?;
    if reuse_port {
        // --reuse-port: another server may bind the same port beside this one.
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // `[::]` and `0.0.0.0` can then both be bound, as separate sockets.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    set_defer_accept(&socket, defer_accept)?;
    socket.listen(backlog)?;
    // Every worker polls the socket and accepts without blocking; a connection another
    // worker took first is just EAGAIN.
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Give sockets that are already listening (kept across a HUP, or adopted from the
/// previous binary after USR2) the backlog and deferred accepts the configuration
/// now asks for. Linux takes a second `listen(2)` on a listening socket as a new
/// backlog, and `TCP_DEFER_ACCEPT` at any time.
pub fn apply_options(listeners: &[Listener], backlog: i32, defer_accept: bool) -> io::Result<()> {
    for l in listeners.iter().filter(|l| !l.activated) {
        set_defer_accept(&l.socket, defer_accept)?;
        socket2::SockRef::from(&l.socket).listen(backlog)?;
    }
    Ok(())
}

/// With it, a connection wakes a worker once, when its request arrives, rather than
/// once to be accepted and again for its first bytes: a third less system time per
/// `Connection: close` request (docs/design.md). Without it, 0 clears it.
fn set_defer_accept(socket: &impl std::os::fd::AsFd, on: bool) -> io::Result<()> {
    let seconds = if on { DEFER_ACCEPT_SECONDS } else { 0 };
    nix::sys::socket::setsockopt(socket, TcpDeferAccept, &seconds)?;
    Ok(())
}

/// Whether the kernel hands this socket's connections over only once data has come
/// (`TCP_DEFER_ACCEPT` set, by ferricorn or by a systemd unit's `DeferAcceptSec=`).
pub fn defers_accepts(socket: &TcpListener) -> bool {
    nix::sys::socket::getsockopt(socket, TcpDeferAccept).is_ok_and(|s| s > 0)
}

/// Whether `listeners` are the sockets `binds` asks for (a port 0 bind matches any
/// port), so that a new configuration that names other addresses can be told apart.
pub fn match_binds(listeners: &[Listener], binds: &[Bind]) -> bool {
    let Ok(resolved) = resolve(binds) else {
        return false;
    };
    let mut wanted: Vec<SocketAddr> = resolved.into_iter().map(|(_, addr)| addr).collect();
    wanted.sort();
    wanted.dedup();
    wanted.len() == listeners.len()
        && wanted.iter().all(|w| {
            listeners
                .iter()
                .any(|l| l.addr.ip() == w.ip() && (w.port() == 0 || l.addr.port() == w.port()))
        })
}

/// Stop listening for everybody who shares the socket, at once: `shutdown(2)` on a
/// listening socket closes it in the kernel, so new connections are refused even
/// while a worker that still holds a copy is busy inside a request. Not a socket
/// systemd passed: it stays open in systemd, and new connections wait there for
/// the next start instead (workers close their copies as they stop).
pub fn stop_listening(listener: &Listener) {
    if !listener.activated {
        let _ = socket2::SockRef::from(&listener.socket).shutdown(std::net::Shutdown::Both);
    }
}
