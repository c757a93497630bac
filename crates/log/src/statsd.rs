//! StatsD, as gunicorn's `--statsd-host` sends it (`gunicorn/instrument/statsd.py`):
//! the same names, types and line format, so dashboards and alerts built on a
//! gunicorn keep working when the command changes.
//!
//! | metric (after the prefix)         | type            | sent by | when |
//! |-----------------------------------|-----------------|---------|------|
//! | `gunicorn.request.duration`       | timer, ms       | worker  | each response, where the access log is written |
//! | `gunicorn.requests`               | counter `@1.0`  | worker  | each response |
//! | `gunicorn.request.status.NNN`     | counter `@1.0`  | worker  | each response |
//! | `gunicorn.workers`                | gauge           | master  | when the number of workers changes |
//! | `gunicorn.log.warning`, `.error`, `.critical`, `.exception` | counter `@1.0` | each process | each error-log line of that level |
//!
//! One deliberate difference: a request's three lines go in one datagram,
//! separated by `\n` (one `send(2)` instead of three); gunicorn sends a datagram
//! per line. Every collector in use splits on newlines (etsy statsd, the Datadog
//! agent, Telegraf, statsd_exporter, Veneur).
//!
//! A collector never gets in a request's way: the socket is non-blocking, a
//! datagram that cannot be sent (nobody listening, a full queue, a missing socket
//! file) is dropped, and the first such failure in a process is logged once, as a
//! warning. Per request: no allocation (a per-thread buffer is reused) and one
//! lock-free check when statsd is off.

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// Where metrics go: `--statsd-host`, as gunicorn reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Udp {
        host: String,
        port: u16,
    },
    /// A unix datagram socket, sent to by path (so a collector that restarts and
    /// makes its socket anew is found again).
    Unix(PathBuf),
}

/// The statsd settings, as given (`statsd_host`, `statsd_prefix`, `dogstatsd_tags`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    pub prefix: String,
    pub tags: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Udp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Udp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

impl Target {
    /// gunicorn's `validate_statsd_address`: `unix://PATH` or `unix:PATH`;
    /// `HOST:PORT`, `[IPV6]:PORT`, `tcp://HOST:PORT`, or `HOST` (port 8125).
    pub fn parse(text: &str) -> Result<Target, String> {
        const USAGE: &str = "expected HOST:PORT or unix://PATH";
        if let Some(rest) = text.strip_prefix("unix:") {
            // As gunicorn (a guard it keeps for compatibility since release 20):
            // `unix:8125` is the host named `unix`, port 8125, not a socket file.
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                let port = rest.parse().map_err(|_| USAGE.to_string())?;
                return Ok(Target::Udp {
                    host: "unix".into(),
                    port,
                });
            }
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(USAGE.into());
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if text.starts_with("fd://") {
            return Err(USAGE.into());
        }
        let netloc = text.strip_prefix("tcp://").unwrap_or(text);
        let (host, port) = if let Some(inner) = netloc.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(|| USAGE.to_string())?;
            (host, after.strip_prefix(':').unwrap_or("8125"))
        } else {
            // gunicorn's split: the first two `:` fields.
            let mut parts = netloc.split(':');
            let host = parts.next().unwrap_or_default();
            (host, parts.next().unwrap_or("8125"))
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port number; {USAGE}"))?;
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        Ok(Target::Udp {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// gunicorn's prefix rule (`re.sub(r"^(.+[^.]+)\.*$", r"\g<1>.", prefix)`): trailing
/// dots become one, and one is added when missing, but only to a prefix of two
/// characters or more before its trailing dots; `a` stays `a` (so the metric is
/// `agunicorn.requests`), as gunicorn sends it.
pub fn normalized_prefix(raw: &str) -> String {
    let trimmed = raw.trim_end_matches('.');
    if trimmed.chars().count() >= 2 {
        format!("{trimmed}.")
    } else {
        raw.to_string()
    }
}

/// A prefix or tag list that would break the line format (`:` and `|` separate
/// a line's fields, a newline separates lines), or is not ASCII (gunicorn then
/// sends nothing at all), is refused when the configuration is read.
pub fn check_text(text: &str, forbidden: &[char]) -> Result<(), String> {
    match text
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_control() || forbidden.contains(c))
    {
        Some(c) => Err(format!(
            "{c:?} cannot be sent in a statsd line (ASCII without control characters{})",
            if forbidden.is_empty() {
                String::new()
            } else {
                format!(" or any of {forbidden:?}")
            }
        )),
        None => Ok(()),
    }
}

enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram, PathBuf),
}

impl Socket {
    fn open(target: &Target) -> io::Result<Socket> {
        match target {
            Target::Udp { host, port } => {
                let addr: SocketAddr = (host.as_str(), *port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "the name has no address")
                    })?;
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let sock = UdpSocket::bind(local)?;
                sock.connect(addr)?;
                sock.set_nonblocking(true)?;
                Ok(Socket::Udp(sock))
            }
            Target::Unix(path) => {
                let sock = UnixDatagram::unbound()?;
                sock.set_nonblocking(true)?;
                Ok(Socket::Unix(sock, path.clone()))
            }
        }
    }

    fn send(&self, datagram: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Udp(s) => s.send(datagram),
            Socket::Unix(s, path) => s.send_to(datagram, path),
        }
    }
}

struct Client {
    socket: Socket,
    prefix: String,
    /// `|#TAGS`, or empty.
    tags: String,
    request: RequestLines,
}

/// A request's three lines, in gunicorn's order (duration, requests, status),
/// with everything but the two numbers written once, at start: per request, two
/// numbers are printed between three copies.
struct RequestLines {
    /// `PREFIXgunicorn.request.duration:`
    head: String,
    /// `|ms|#TAGS\nPREFIXgunicorn.requests:1|c|@1.0|#TAGS\nPREFIXgunicorn.request.status.`
    middle: String,
    /// `:1|c|@1.0|#TAGS`
    tail: String,
}

impl RequestLines {
    fn new(prefix: &str, tags: &str) -> RequestLines {
        RequestLines {
            head: format!("{prefix}gunicorn.request.duration:"),
            middle: format!(
                "|ms{tags}\n{prefix}gunicorn.requests:1|c|@1.0{tags}\n{prefix}gunicorn.request.status."
            ),
            tail: format!(":1|c|@1.0{tags}"),
        }
    }

    fn write(&self, buf: &mut Vec<u8>, status: u16, elapsed: Duration) {
        buf.extend_from_slice(self.head.as_bytes());
        push_millis(buf, elapsed);
        buf.extend_from_slice(self.middle.as_bytes());
        push_decimal(buf, u64::from(status));
        buf.extend_from_slice(self.tail.as_bytes());
    }
}

/// Off unless `configure` succeeded: the one check a request pays when off.
static ON: AtomicBool = AtomicBool::new(false);
/// Written only by the master (single-threaded) at start and on a reload, before
/// it forks the workers that read it.
static CLIENT: RwLock<Option<Client>> = RwLock::new(None);
/// A failure to send was logged in this process.
static WARNED: AtomicBool = AtomicBool::new(false);
/// The master's last `gunicorn.workers` value (`usize::MAX`: none yet).
static LAST_WORKERS: AtomicUsize = AtomicUsize::new(usize::MAX);

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Start (or, on a reload, replace or stop) sending. An error (a host that does
/// not resolve, no socket) leaves statsd off; the caller says so.
pub fn configure(settings: Option<&Settings>) -> io::Result<()> {
    let client = settings
        .map(|s| {
            let prefix = normalized_prefix(&s.prefix);
            let tags = if s.tags.is_empty() {
                String::new()
            } else {
                format!("|#{}", s.tags)
            };
            Ok::<_, io::Error>(Client {
                socket: Socket::open(&s.target)?,
                request: RequestLines::new(&prefix, &tags),
                prefix,
                tags,
            })
        })
        .transpose();
    let mut slot = CLIENT.write().unwrap_or_else(|e| e.into_inner());
    ON.store(false, Ordering::SeqCst);
    *slot = None;
    let client = client?;
    ON.store(client.is_some(), Ordering::SeqCst);
    *slot = client;
    WARNED.store(false, Ordering::SeqCst);
    LAST_WORKERS.store(usize::MAX, Ordering::SeqCst);
    Ok(())
}

/// One response: its duration, and the two counters (gunicorn's `access`).
pub fn request(status: u16, elapsed: Duration) {
    send_with(|buf, c| c.request.write(buf, status, elapsed));
}

/// The master's worker count, sent when it differs from the last one sent.
pub fn workers(count: usize) {
    if ON.load(Ordering::Relaxed) && LAST_WORKERS.swap(count, Ordering::Relaxed) != count {
        send_with(|buf, c| line(buf, &c.prefix, "gunicorn.workers", count, "g", &c.tags));
    }
}

/// One error-log line of a level gunicorn counts: `warning`, `error`, `critical`
/// or `exception`.
pub(crate) fn log_line(kind: &str) {
    send_with(|buf, c| {
        line(
            buf,
            &c.prefix,
            format_args!("gunicorn.log.{kind}"),
            1,
            "c|@1.0",
            &c.tags,
        )
    });
}

/// Format into this thread's buffer and send; a failure is dropped, and the first
/// one in the process logged (after every lock and borrow is let go, since the
/// warning line itself is counted through here).
fn send_with(format: impl FnOnce(&mut Vec<u8>, &Client)) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let result = BUF.with(|buf| {
        // Taken already only if formatting logged, which it does not.
        let Ok(mut buf) = buf.try_borrow_mut() else {
            return Ok(0);
        };
        let guard = CLIENT.read().unwrap_or_else(|e| e.into_inner());
        let Some(client) = guard.as_ref() else {
            return Ok(0);
        };
        buf.clear();
        format(&mut buf, client);
        client.socket.send(&buf)
    });
    if let Err(e) = result {
        if !WARNED.swap(true, Ordering::Relaxed) {
            log::warn!("statsd: a metric could not be sent ({e}); metrics that cannot be sent are dropped, and this is said once per process");
        }
    }
}

/// `PREFIXNAME:VALUE|TYPE|#TAGS`, as gunicorn's `_sock_send` writes each line.
fn line(
    buf: &mut Vec<u8>,
    prefix: &str,
    name: impl std::fmt::Display,
    value: impl std::fmt::Display,
    kind: &str,
    tags: &str,
) {
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{prefix}{name}:{value}|{kind}{tags}");
}

/// Milliseconds to the microsecond, as Python prints gunicorn's float
/// (`seconds * 1000 + microseconds / 1000`): `12.0`, `1.07`, `0.523`.
fn push_millis(buf: &mut Vec<u8>, elapsed: Duration) {
    let micros = elapsed
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(elapsed.subsec_micros()));
    push_decimal(buf, micros / 1000);
    buf.push(b'.');
    let frac = micros % 1000;
    let digits = [frac / 100, frac / 10 % 10, frac % 10];
    // Python's shortest form: no trailing zeros, but one digit at least.
    let keep = digits.iter().rposition(|d| *d != 0).map_or(1, |i| i + 1);
    buf.extend(digits[..keep].iter().map(|d| b'0' + *d as u8));
}

/// `n` in decimal, without the formatting machinery (this is per request).
fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_as_gunicorn_reads_them() {
        let udp = |h: &str, port| Target::Udp {
            host: h.into(),
            port,
        };
        for (text, want) in [
            ("localhost:8125", Ok(udp("localhost", 8125))),
            ("StatsD.example:9125", Ok(udp("statsd.example", 9125))),
            ("10.0.0.5", Ok(udp("10.0.0.5", 8125))),
            ("[::1]:9125", Ok(udp("::1", 9125))),
            ("[::1]", Ok(udp("::1", 8125))),
            ("tcp://host:1", Ok(udp("host", 1))),
            (":9125", Ok(udp("0.0.0.0", 9125))),
            (
                "unix:///run/statsd.sock",
                Ok(Target::Unix("/run/statsd.sock".into())),
            ),
            (
                "unix:/run/statsd.sock",
                Ok(Target::Unix("/run/statsd.sock".into())),
            ),
            // gunicorn's guard: a port, not a file named 8125.
            ("unix:8125", Ok(udp("unix", 8125))),
        ] {
            assert_eq!(Target::parse(text), want, "{text}");
        }
        for bad in ["host:port", "host:70000", "unix:", "fd://3", "[::1"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_rule_is_gunicorns_regex() {
        for (raw, want) in [
            ("", ""),
            ("app", "app."),
            ("app.", "app."),
            ("app...", "app."),
            ("my.app", "my.app."),
            (".a", ".a."),
            // The regex needs two characters before the trailing dots.
            ("a", "a"),
            ("a.", "a."),
            ("..", ".."),
        ] {
            assert_eq!(normalized_prefix(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn a_request_is_three_lines_in_gunicorns_order_and_format() {
        let mut buf = Vec::new();
        RequestLines::new("app.", "|#env:prod,a:b").write(
            &mut buf,
            404,
            Duration::from_micros(1070),
        );
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "app.gunicorn.request.duration:1.07|ms|#env:prod,a:b\n\
             app.gunicorn.requests:1|c|@1.0|#env:prod,a:b\n\
             app.gunicorn.request.status.404:1|c|@1.0|#env:prod,a:b"
        );
    }

    #[test]
    fn milliseconds_print_as_python_prints_the_float() {
        for (micros, want) in [
            (0, "0.0"),
            (1, "0.001"),
            (523, "0.523"),
            (1070, "1.07"),
            (1500, "1.5"),
            (12_000, "12.0"),
            (3_600_000_123, "3600000.123"),
            (1_000_010, "1000.01"),
            (1_000_100, "1000.1"),
        ] {
            let mut buf = Vec::new();
            push_millis(&mut buf, Duration::from_micros(micros));
            assert_eq!(String::from_utf8(buf).unwrap(), want, "{micros}");
        }
    }

    #[test]
    fn text_that_would_break_a_line_is_refused() {
        assert!(check_text("app.web", &[':', '|']).is_ok());
        assert!(check_text("env:prod,role:web", &['|']).is_ok());
        for (bad, forbidden) in [
            ("a:b", &[':', '|'][..]),
            ("a|b", &['|']),
            ("a\nb", &[]),
            ("é", &[]),
        ] {
            let e = check_text(bad, forbidden).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
