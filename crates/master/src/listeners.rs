//! Binding the listening sockets the workers share.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use ferricorn_config::Bind;
use ferricorn_signals::{closing, ListenAddr, Listening};
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
    pub socket: Listening,
    pub addr: ListenAddr,
    /// Passed by systemd (socket activation) or by a parent (`fd://N`), which keeps
    /// it open across this server's restarts: connections that arrive meanwhile
    /// wait in its queue for the next start, so it is never shut down (nor its
    /// file removed), and its options are the passer's.
    pub activated: bool,
    /// A unix socket file this server made, removed when it stops for good.
    pub made: Option<crate::unix_socket::Made>,
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
            made: None,
        })
    }

    /// The TCP address, for a TCP socket.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.addr {
            ListenAddr::Tcp(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        }
    }

    fn unix_path(&self) -> Option<&PathBuf> {
        match &self.addr {
            ListenAddr::Unix(p) => p.as_ref(),
            ListenAddr::Tcp(_) => None,
        }
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
    #[error("cannot bind `{bind}`: {why}")]
    Other { bind: String, why: String },
}

impl BindError {
    /// The errno the system gave, if any (systemd's `ERRNO=`).
    pub fn errno(&self) -> Option<i32> {
        match self {
            BindError::Resolve { source, .. } | BindError::Bind { source, .. } => {
                source.raw_os_error()
            }
            BindError::Other { .. } => None,
        }
    }
}

/// What binding a socket needs besides its address.
#[derive(Debug, Clone, Copy)]
pub struct BindOptions {
    pub backlog: i32,
    pub reuse_port: bool,
    pub defer_accept: bool,
    /// `--user`/`--group`: a unix socket file is handed to them.
    pub owner: Option<(u32, u32)>,
}

/// Bind every address of every `Bind` (a host name may resolve to several), make
/// every `unix:` socket, and take every `fd://` one.
pub fn bind_all(binds: &[Bind], opts: BindOptions) -> Result<Vec<Listener>, BindError> {
    let mut out: Vec<Listener> = Vec::new();
    for bind in binds {
        let other = |why: String| BindError::Other {
            bind: bind.to_string(),
            why,
        };
        match bind {
            Bind::Tcp { .. } => {}
            Bind::Unix(path) => {
                if out.iter().any(|l| l.unix_path() == Some(path)) {
                    continue;
                }
                let (socket, made) = crate::unix_socket::bind(path, opts.backlog, opts.owner)
                    .map_err(|e| other(e.to_string()))?;
                out.push(Listener {
                    socket: Listening::Unix(socket),
                    addr: ListenAddr::Unix(Some(path.clone())),
                    activated: false,
                    made: Some(made),
                });
                continue;
            }
            Bind::Fd(fd) => {
                let l = Listener::adopt(*fd, true).map_err(|e| other(e.to_string()))?;
                out.push(l);
                continue;
            }
        }
        for (bind, addr) in resolve(std::slice::from_ref(bind))? {
            if out.iter().any(|l| l.tcp_addr() == Some(addr)) {
                continue;
            }
            let socket = listen(addr, opts).map_err(|source| BindError::Bind {
                bind: bind.to_string(),
                addr,
                source,
            })?;
            let addr = socket.local_addr().unwrap_or(addr);
            out.push(Listener {
                socket: Listening::Tcp(socket),
                addr: ListenAddr::Tcp(addr),
                activated: false,
                made: None,
            });
        }
    }
    Ok(out)
}

/// Every address of every TCP `Bind`, with the bind it came from.
fn resolve(binds: &[Bind]) -> Result<Vec<(&Bind, SocketAddr)>, BindError> {
    let mut out = Vec::new();
    for bind in binds {
        let Bind::Tcp { host, port } = bind else {
            continue;
        };
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

fn listen(addr: SocketAddr, opts: BindOptions) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarts must not wait for TIME_WAIT connections of the previous process.
    socket.set_reuse_address(true)?;
    if opts.reuse_port {
        // --reuse-port: another server may bind the same port beside this one.
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // `[::]` and `0.0.0.0` can then both be bound, as separate sockets.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    set_defer_accept(&socket, opts.defer_accept)?;
    socket.listen(opts.backlog)?;
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
        if !l.socket.is_unix() {
            set_defer_accept(&l.socket, defer_accept)?;
        }
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
pub fn defers_accepts(socket: &Listening) -> bool {
    match socket {
        Listening::Tcp(s) => nix::sys::socket::getsockopt(s, TcpDeferAccept).is_ok_and(|s| s > 0),
        Listening::Unix(_) => false,
    }
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
    let mut paths: Vec<&PathBuf> = binds
        .iter()
        .filter_map(|b| match b {
            Bind::Unix(p) => Some(p),
            _ => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    let fds = binds.iter().filter(|b| matches!(b, Bind::Fd(_))).count();
    let tcp: Vec<SocketAddr> = listeners.iter().filter_map(Listener::tcp_addr).collect();
    wanted.len() + paths.len() + fds == listeners.len()
        && wanted.iter().all(|w| {
            tcp.iter()
                .any(|a| a.ip() == w.ip() && (w.port() == 0 || a.port() == w.port()))
        })
        && paths
            .iter()
            .all(|p| listeners.iter().any(|l| l.unix_path() == Some(p)))
}

/// After an upgrade: the unix socket files the configuration names were made by
/// this server (by the binary before the exec), and are removed when it stops.
pub fn claim_unix_files(listeners: &mut [Listener], binds: &[Bind]) {
    for l in listeners.iter_mut().filter(|l| !l.activated) {
        let Some(path) = l.unix_path() else { continue };
        if binds
            .iter()
            .any(|b| matches!(b, Bind::Unix(p) if p == path))
        {
            l.made = crate::unix_socket::Made::claim(path);
        }
    }
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
/// (A unix socket needs no such step: it already refuses new connections, and
/// its queue is answered at the end like any leftovers.)
pub fn close_drained(listeners: &mut Vec<Listener>) -> usize {
    listeners.retain(|l| {
        if l.socket.is_unix() {
            return true;
        }
        match closing::queued_connections(&l.socket) {
            Ok(0) | Err(_) => {
                shut_down(l);
                false
            }
            Ok(_) => true,
        }
    });
    listeners.len()
}

/// The stop is over and no worker is left: answer what is still queued with a
/// 503, which tells its client the request did not run, then shut the sockets
/// down. Returns how many were answered.
pub fn answer_unserved(listeners: Vec<Listener>) -> usize {
    let mut answered = 0;
    for l in listeners {
        // TCP or unix alike: the socket is non-blocking, so this ends at the
        // queue's end.
        while let Ok((conn, _)) = socket2::SockRef::from(&l.socket).accept() {
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
fn answer_503(mut conn: socket2::Socket) {
    use std::io::{Read, Write};
    let _ = conn.set_nonblocking(true);
    let mut buf = [0u8; 16 * 1024];
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
