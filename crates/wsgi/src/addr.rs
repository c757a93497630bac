//! The two ends of a client connection, over TCP or a unix socket.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Ip(SocketAddr),
    /// A process on this machine, over a unix socket: it has no address (a front
    /// proxy names the client in its headers, or in a PROXY header).
    Unix,
}

impl Peer {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Ip(a) => Some(a.ip()),
            Peer::Unix => None,
        }
    }

    pub fn port(&self) -> Option<u16> {
        match self {
            Peer::Ip(a) => Some(a.port()),
            Peer::Unix => None,
        }
    }

    /// Whether `list` allows this peer; a unix peer always is: only processes of
    /// this machine allowed by the socket file's mode can connect (gunicorn does
    /// the same for `forwarded_allow_ips` and `proxy_allow_ips`).
    pub fn allowed_by(&self, list: &ferricorn_http::AllowList) -> bool {
        self.ip().is_none_or(|ip| list.contains(ip))
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Ip(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix socket peer"),
        }
    }
}

/// Where a connection came in: SERVER_NAME and SERVER_PORT when the request has
/// no Host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    Ip(SocketAddr),
    /// The unix socket's path, as SERVER_NAME (with an empty SERVER_PORT), as
    /// gunicorn gives it.
    Unix(Arc<str>),
}
