//! Binding the listening sockets the workers share.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use ferricorn_config::Bind;
use ferricorn_signals::closing;
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
        // A previous process may have been stopping when it handed the socket on.
        closing::admit_new_connections(&socket);
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

impl BindError {
    /// The errno the system gave, if any (systemd's `ERRNO=`).
    pub fn errno(&self) -> Option<i32> {
        match self {
            BindError::Resolve { source, .. } | BindError::Bind { source, .. } => {
                source.raw_os_error()
            }
        }
    }
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

/// The first step of a stop. A socket systemd passed is let go: systemd keeps it
/// open, and what queues there waits for the next start. Ours stop admitting new
/// connections (see `ferricorn_signals::closing`) but keep those the kernel
/// already completed, for the workers to drain; returned are the sockets still to
/// close. One whose filter cannot be attached is shut down at once, as before.
pub fn stop_admitting(listeners: Vec<Listener>) -> Vec<Listener> {
    let mut draining = Vec::new();
    for l in listeners.into_iter().filter(|l| !l.activated) {
        match closing::refuse_new_connections(&l.socket) {
            Ok(()) => draining.push(l),
            Err(e) => {
                log::warn!(
                    "cannot keep the connections queued on {} through the stop ({e}); closing it now",
                    l.addr
                );
                shut_down(&l);
            }
        }
    }
    draining
}

/// Shut down, for everybody, each socket whose queue is empty: the workers have
/// taken everything that was let in. Returns how many are left.
pub fn close_drained(listeners: &mut Vec<Listener>) -> usize {
    listeners.retain(|l| match closing::queued_connections(&l.socket) {
        Ok(0) | Err(_) => {
            shut_down(l);
            false
        }
        Ok(_) => true,
    });
    listeners.len()
}

/// The stop is over and no worker is left: answer what is still queued with a
/// 503, which tells its client the request did not run, then shut the sockets
/// down. Returns how many were answered.
pub fn answer_unserved(listeners: Vec<Listener>) -> usize {
    let mut answered = 0;
    for l in listeners {
        while let Ok((conn, _)) = l.socket.accept() {
            answer_503(conn);
            answered += 1;
        }
        shut_down(&l);
    }
    answered
}

const STOPPED_BODY: &str = "The server stopped before serving this request.\n";

/// Best effort, never blocking: what the client sent is read first, so that the
/// close sends a FIN after the answer rather than a reset that may destroy it.
fn answer_503(conn: std::net::TcpStream) {
    use std::io::{Read, Write};
    let _ = conn.set_nonblocking(true);
    let mut buf = [0u8; 16 * 1024];
    let mut conn = conn;
    for _ in 0..4 {
        match conn.read(&mut buf) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{STOPPED_BODY}",
        STOPPED_BODY.len()
    );
    let _ = conn.write_all(answer.as_bytes());
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

/// Stop listening for everybody who shares the socket, at once: `shutdown(2)` on a
/// listening socket closes it in the kernel, so new connections are refused even
/// while a worker that still holds a copy is busy inside a request.
fn shut_down(listener: &Listener) {
    let _ = socket2::SockRef::from(&listener.socket).shutdown(std::net::Shutdown::Both);
}
