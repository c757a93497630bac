//! Binding the listening sockets the workers share.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use ferricorn_config::Bind;
use nix::{setsockopt_impl, sockopt_impl};
use socket2::{Domain, Protocol, Socket, Type};

sockopt_impl!(
    /// Linux's TCP_DEFER_ACCEPT (seconds), which nix does not name.
    TcpDeferAccept,
    SetOnly,
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
    for bind in binds {
        let Bind::Tcp { host, port } = bind;
        let addrs =
            (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|source| BindError::Resolve {
                    bind: bind.to_string(),
                    source,
                })?;
        for addr in addrs {
            if out.iter().any(|l| l.addr == addr) {
                continue;
            }
            let socket = listen(addr, backlog, reuse_port, defer_accept).map_err(|source| {
                BindError::Bind {
                    bind: bind.to_string(),
                    addr,
                    source,
                }
            })?;
            let addr = socket.local_addr().unwrap_or(addr);
            out.push(Listener { socket, addr });
        }
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
    if defer_accept {
        // A connection wakes a worker once, when its request arrives, rather than
        // once to be accepted and again for its first bytes: a third less system
        // time per `Connection: close` request (docs/design.md).
        nix::sys::socket::setsockopt(&socket, TcpDeferAccept, &DEFER_ACCEPT_SECONDS)?;
    }
    socket.listen(backlog)?;
    // Every worker polls the socket and accepts without blocking; a connection another
    // worker took first is just EAGAIN.
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Stop listening for everybody who shares the socket, at once: `shutdown(2)` on a
/// listening socket closes it in the kernel, so new connections are refused even
/// while a worker that still holds a copy is busy inside a request.
pub fn stop_listening(listener: &Listener) {
    let _ = socket2::SockRef::from(&listener.socket).shutdown(std::net::Shutdown::Both);
}
