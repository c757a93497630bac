use std::fmt;
use std::path::PathBuf;

use crate::{ConfigError, Source};

/// One listening address, as given (host names are resolved when binding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Tcp {
        host: String,
        port: u16,
    },
    /// `unix:PATH`: a unix socket ferricorn creates at PATH.
    Unix(PathBuf),
    /// `fd://N`: a listening socket a parent process passed as fd N.
    Fd(i32),
}

impl Bind {
    /// gunicorn's forms: `HOST:PORT`, `[V6]:PORT`, `HOST` (port 8000), `:PORT` (all
    /// IPv4), `unix:PATH` (also `unix://PATH`), `fd://N`.
    pub fn parse(s: &str, source: Source) -> Result<Bind, ConfigError> {
        let err = |reason: &str| ConfigError::new("bind", s, source.clone(), reason);
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(err("a unix socket needs a path, e.g. unix:/run/app.sock"));
            }
            return Ok(Bind::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = s.strip_prefix("fd://") {
            return match fd.parse::<i32>() {
                Ok(n) if n >= 0 => Ok(Bind::Fd(n)),
                _ => Err(err("expected fd://N with N an open file descriptor number")),
            };
        }
        let s2 = s.strip_prefix("tcp://").unwrap_or(s);
        let (host, port) = if let Some(rest) = s2.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| err("missing `]` after an IPv6 address"))?;
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| err("expected `:PORT` after `]`"))?,
                    ),
                ),
            }
        } else if s2.matches(':').count() > 1 {
            return Err(err("write IPv6 addresses in brackets, e.g. [::1]:8000"));
        } else {
            match s2.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s2, None),
            }
        };
        let port = match port {
            None => 8000,
            Some(p) => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("the port must be a number from 0 to 65535"));
                }
                p.parse::<u16>()
                    .map_err(|_| err("the port must be a number from 0 to 65535"))?
            }
        };
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        Ok(Bind::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bind::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Bind::Tcp { host, port } => write!(f, "{host}:{port}"),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
            Bind::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let ok = [
            ("127.0.0.1:8000", "127.0.0.1", 8000),
            ("localhost", "localhost", 8000),
            (":9000", "0.0.0.0", 9000),
            ("[::1]:0", "::1", 0),
            ("[::]", "::", 8000),
            ("tcp://0.0.0.0:80", "0.0.0.0", 80),
        ];
        for (s, host, port) in ok {
            assert_eq!(
                Bind::parse(s, Source::Default).unwrap(),
                Bind::Tcp {
                    host: host.into(),
                    port
                },
                "{s}"
            );
        }
        for s in [
            "1.2.3.4:", "h:70000", "h:-1", "::1:80", "[::1", "[::1]80", "unix:", "fd://x",
            "fd://-1",
        ] {
            assert!(Bind::parse(s, Source::Default).is_err(), "{s}");
        }
        for (s, path) in [
            ("unix:/run/a.sock", "/run/a.sock"),
            ("unix://rel.sock", "rel.sock"),
        ] {
            let bind = Bind::parse(s, Source::Default).unwrap();
            assert_eq!(bind, Bind::Unix(path.into()));
            assert_eq!(bind.to_string(), format!("unix:{path}"));
        }
        assert_eq!(Bind::parse("fd://3", Source::Default).unwrap(), Bind::Fd(3));
    }
}
