//! `--metrics-bind`: the master's own small HTTP endpoint for Prometheus
//! (`/metrics`, text exposition format 0.0.4) and for probes (`/livez`,
//! `/readyz`). docs/metrics.md lists every metric.
//!
//! It runs inside the master loop and must never hold it up: the socket and its
//! connections are non-blocking and registered with the loop's `Poll`; each turn
//! of the loop moves every connection on as far as it goes without waiting. A
//! connection has one deadline for its whole exchange, and at most
//! [`MAX_CONNS`] are open at once (more wait in the kernel's queue), so a client
//! that connects and sends nothing costs one slot for a few seconds, never the
//! loop's time.
//!
//! The numbers come from the scoreboard, which workers write, so they are
//! untrusted: each read is bounded (see `Slot::counts`), sums saturate, and the
//! master keeps the most it saw of each live worker's counters, so a total never
//! goes down. When a worker is reaped its last counts are folded into the
//! master's totals before its slot is assigned again, which keeps the counters
//! monotonic across worker restarts and reloads.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime};

use ferricorn_config::Bind;
use ferricorn_signals::closing::accept_queue;
use ferricorn_signals::scoreboard::{
    Counts, Scoreboard, DURATION_BUCKETS_US, METHODS, STATUS_CLASSES,
};
use log::{debug, info};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::listeners::Listener;
use crate::worker_table::{WorkerSlot, WorkerTable};

/// Metrics connections open at once.
pub const MAX_CONNS: usize = 8;
/// A connection's whole exchange: request, response and close.
const DEADLINE: Duration = Duration::from_secs(5);
/// The longest request head read; a longer one is answered 431.
const MAX_HEAD: usize = 8 * 1024;
/// The loop's tokens for the socket and its connections: above any pid (the
/// worker status pipes' tokens).
const LISTENER_TOKEN: Token = Token(usize::MAX - MAX_CONNS - 1);

/// Whether a `Poll` token is one of this module's.
pub fn owns(token: Token) -> bool {
    token.0 >= LISTENER_TOKEN.0
}

fn conn_token(i: usize) -> Token {
    Token(LISTENER_TOKEN.0 + 1 + i)
}

/// Why a worker ended, as `ferricorn_worker_exits_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// The master killed it for `--timeout` (in a request, silent, or booting).
    Timeout,
    /// Killed by a signal the master did not send, or a non-zero exit.
    Crash,
    /// Replaced after `--max-requests`.
    MaxRequests,
    /// Retired by a reload (HUP) or an upgrade (USR2): its generation ended.
    Reload,
    /// Retired because the number of workers went down (TTOU, a reload).
    ScaleDown,
    /// Died before it was ready.
    BootFailure,
    /// The server is stopping.
    Stop,
    /// Ended on its own with status 0 (the app raised SystemExit, `--reload` saw a change).
    Exited,
}

const CAUSES: [ExitCause; 8] = [
    ExitCause::Timeout,
    ExitCause::Crash,
    ExitCause::MaxRequests,
    ExitCause::Reload,
    ExitCause::ScaleDown,
    ExitCause::BootFailure,
    ExitCause::Stop,
    ExitCause::Exited,
];

impl ExitCause {
    fn label(self) -> &'static str {
        match self {
            ExitCause::Timeout => "timeout",
            ExitCause::Crash => "crash",
            ExitCause::MaxRequests => "max_requests",
            ExitCause::Reload => "reload",
            ExitCause::ScaleDown => "scale_down",
            ExitCause::BootFailure => "boot_failure",
            ExitCause::Stop => "stop",
            ExitCause::Exited => "exited",
        }
    }

    /// Why worker `w` ended, from the master's own records of it: `crashed` if
    /// it was killed by a signal or exited non-zero; `stopping` if the server
    /// is; `generation` is the master's current one.
    pub fn of(w: &WorkerSlot, crashed: bool, stopping: bool, generation: u32) -> ExitCause {
        if w.aborted.is_some() {
            ExitCause::Timeout
        } else if stopping || w.killed_for.is_some() {
            ExitCause::Stop
        } else if w.retiring && w.wants_recycle {
            ExitCause::MaxRequests
        } else if w.retiring && w.generation != generation {
            ExitCause::Reload
        } else if w.retiring {
            ExitCause::ScaleDown
        } else if !w.ready {
            ExitCause::BootFailure
        } else if crashed {
            ExitCause::Crash
        } else {
            ExitCause::Exited
        }
    }
}

/// What the master knows right now, for one answer.
pub struct View<'a> {
    pub board: Option<&'a Scoreboard>,
    pub workers: &'a WorkerTable,
    pub listeners: &'a [Listener],
    /// A stop (of any kind) has begun.
    pub stopping: bool,
}

impl View<'_> {
    /// Ready: not stopping, and every listener served by a ready worker (every
    /// worker serves every listener; during a reload, either generation's).
    fn ready(&self) -> bool {
        !self.stopping
            && !self.listeners.is_empty()
            && self.workers.iter().any(|w| w.ready && !w.retiring)
    }
}

/// The endpoint and the master's totals.
pub struct Metrics {
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    /// The last counts of every worker reaped.
    folded: Counts,
    /// The most seen of each live worker's counts, by scoreboard slot.
    seen: HashMap<usize, Counts>,
    exits: [u64; CAUSES.len()],
    /// When the last reload began (or the master started).
    reloaded: (Instant, SystemTime),
}

impl Metrics {
    /// Bind `bind` (resolving a host name) and register it with the loop.
    pub fn bind(bind: &Bind, registry: &Registry) -> io::Result<Metrics> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("--metrics-bind {bind}: {e}"));
        let Bind::Tcp { host, port } = bind else {
            return Err(context(io::ErrorKind::InvalidInput.into()));
        };
        let addr = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(context)?
            .next()
            .ok_or_else(|| context(io::ErrorKind::AddrNotAvailable.into()))?;
        let mut listener = TcpListener::bind(addr).map_err(context)?;
        registry
            .register(&mut listener, LISTENER_TOKEN, Interest::READABLE)
            .map_err(context)?;
        let local = listener.local_addr().unwrap_or(addr);
        // tests/it/metrics.rs waits for this line.
        info!("Metrics at: http://{local}/metrics (and /livez, /readyz)");
        Ok(Metrics {
            listener,
            conns: (0..MAX_CONNS).map(|_| None).collect(),
            folded: Counts::default(),
            seen: HashMap::new(),
            exits: [0; CAUSES.len()],
            reloaded: (Instant::now(), SystemTime::now()),
        })
    }

    /// A reload (HUP) began.
    pub fn reloaded(&mut self) {
        self.reloaded = (Instant::now(), SystemTime::now());
    }

    /// Worker `w` was reaped: count its end, and fold its last counts into the
    /// totals before its slot is given to another worker.
    pub fn worker_exited(&mut self, w: &WorkerSlot, cause: ExitCause, board: Option<&Scoreboard>) {
        let mut last = self.seen.remove(&w.slot).unwrap_or_default();
        if let Some(slot) = board.and_then(|b| b.slot(w.slot)) {
            last.raise_to(&slot.counts());
        }
        self.folded.add(&last);
        let i = CAUSES.iter().position(|c| *c == cause).unwrap_or(0);
        self.exits[i] = self.exits[i].saturating_add(1);
    }

    /// When the loop must wake for a connection's deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().flatten().map(|c| c.deadline).min()
    }

    /// One turn of the loop: move every connection on as far as it goes
    /// without blocking, then take new ones while there is room.
    pub fn serve(&mut self, registry: &Registry, view: &View<'_>) {
        let now = Instant::now();
        for i in 0..self.conns.len() {
            let Some(mut conn) = self.conns[i].take() else {
                continue;
            };
            if conn.advance(now, |request| self.answer(request, view)) {
                self.conns[i] = Some(conn);
            } else {
                let _ = registry.deregister(&mut conn.stream);
            }
        }
        while let Some(i) = self.conns.iter().position(Option::is_none) {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if registry
                        .register(&mut stream, conn_token(i), interest)
                        .is_ok()
                    {
                        self.conns[i] = Some(Conn::new(stream, now));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        debug!("metrics: accept: {e}");
                    }
                    break;
                }
            }
        }
    }

    /// The response to a request head.
    fn answer(&mut self, request: Request<'_>, view: &View<'_>) -> Vec<u8> {
        const TEXT: &str = "text/plain; charset=utf-8";
        let (status, body, content_type) = match request {
            Request::TooLarge => ("431 Request Header Fields Too Large", String::new(), TEXT),
            Request::Bad => ("400 Bad Request", String::new(), TEXT),
            Request::Head { method, .. } if method != "GET" => {
                ("405 Method Not Allowed", "only GET\n".into(), TEXT)
            }
            Request::Head {
                path: "/metrics", ..
            } => (
                "200 OK",
                self.render(view),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            Request::Head { path: "/livez", .. } => ("200 OK", "live\n".into(), TEXT),
            Request::Head {
                path: "/readyz", ..
            } if view.ready() => ("200 OK", "ready\n".into(), TEXT),
            Request::Head {
                path: "/readyz", ..
            } => (
                "503 Service Unavailable",
                if view.stopping {
                    "not ready: stopping\n".into()
                } else {
                    "not ready: no worker is ready\n".into()
                },
                TEXT,
            ),
            Request::Head { .. } => ("404 Not Found", "not found\n".into(), TEXT),
        };
        let allow = if status.starts_with("405") {
            "Allow: GET\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// `/metrics`, in the text exposition format.
    fn render(&mut self, view: &View<'_>) -> String {
        let mut total = self.folded;
        let mut in_flight = 0u64;
        let (mut booting, mut ready, mut retiring) = (0u64, 0u64, 0u64);
        for w in view.workers.iter() {
            match (w.retiring, w.ready) {
                (true, _) => retiring += 1,
                (false, true) => ready += 1,
                (false, false) => booting += 1,
            }
            if let Some(slot) = view.board.and_then(|b| b.slot(w.slot)) {
                let seen = self.seen.entry(w.slot).or_default();
                seen.raise_to(&slot.counts());
                total.add(seen);
                in_flight = in_flight.saturating_add(slot.in_app());
            }
        }
        let mut out = String::with_capacity(8 * 1024);
        let o = &mut out;
        family(
            o,
            "ferricorn_requests_total",
            "counter",
            "Responses the workers completed, by request method and status class.",
        );
        for (class, by_method) in STATUS_CLASSES.iter().zip(&total.responses) {
            for (method, n) in METHODS.iter().zip(by_method) {
                let _ = writeln!(
                    o,
                    "ferricorn_requests_total{{method=\"{method}\",status_class=\"{class}\"}} {n}"
                );
            }
        }
        family(
            o,
            "ferricorn_request_duration_seconds",
            "histogram",
            "Time from the app call to the end of the response.",
        );
        let mut cumulative = 0u64;
        for (i, n) in total.duration_buckets.iter().enumerate() {
            cumulative = cumulative.saturating_add(*n);
            let le = DURATION_BUCKETS_US.get(i).map_or_else(
                || "+Inf".to_string(),
                |us| format!("{:?}", *us as f64 / 1e6),
            );
            let _ = writeln!(
                o,
                "ferricorn_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            o,
            "ferricorn_request_duration_seconds_sum {}",
            total.duration_sum_us as f64 / 1e6
        );
        let _ = writeln!(o, "ferricorn_request_duration_seconds_count {cumulative}");
        family(
            o,
            "ferricorn_requests_in_flight",
            "gauge",
            "Calls into the app under way, in all workers.",
        );
        let _ = writeln!(o, "ferricorn_requests_in_flight {in_flight}");
        family(
            o,
            "ferricorn_workers",
            "gauge",
            "Worker processes, by state.",
        );
        for (state, n) in [
            ("booting", booting),
            ("ready", ready),
            ("retiring", retiring),
        ] {
            let _ = writeln!(o, "ferricorn_workers{{state=\"{state}\"}} {n}");
        }
        family(
            o,
            "ferricorn_worker_exits_total",
            "counter",
            "Workers that ended, by cause.",
        );
        for (cause, n) in CAUSES.iter().zip(&self.exits) {
            let _ = writeln!(
                o,
                "ferricorn_worker_exits_total{{cause=\"{}\"}} {n}",
                cause.label()
            );
        }
        family(
            o,
            "ferricorn_reload_age_seconds",
            "gauge",
            "Seconds since the last reload (HUP) began, or since the master started.",
        );
        let _ = writeln!(
            o,
            "ferricorn_reload_age_seconds {}",
            self.reloaded.0.elapsed().as_secs_f64()
        );
        family(
            o,
            "ferricorn_reload_timestamp_seconds",
            "gauge",
            "Unix time of the last reload (HUP), or of the master's start.",
        );
        let at = self
            .reloaded
            .1
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let _ = writeln!(o, "ferricorn_reload_timestamp_seconds {}", at.as_secs_f64());
        family(
            o,
            "ferricorn_ready",
            "gauge",
            "1 while /readyz answers 200.",
        );
        let _ = writeln!(o, "ferricorn_ready {}", u8::from(view.ready()));
        let queues: Vec<(String, (u32, u32))> = view
            .listeners
            .iter()
            .filter(|l| !l.socket.is_unix())
            .filter_map(|l| Some((escape(&l.addr.to_string()), accept_queue(&l.socket).ok()?)))
            .collect();
        family(
            o,
            "ferricorn_listen_backlog",
            "gauge",
            "Connections the kernel completed that no worker has accepted yet, per TCP listener.",
        );
        for (addr, (queued, _)) in &queues {
            let _ = writeln!(
                o,
                "ferricorn_listen_backlog{{listener=\"{addr}\"}} {queued}"
            );
        }
        family(
            o,
            "ferricorn_listen_backlog_limit",
            "gauge",
            "The most connections the kernel queues for acceptance, per TCP listener.",
        );
        for (addr, (_, limit)) in &queues {
            let _ = writeln!(
                o,
                "ferricorn_listen_backlog_limit{{listener=\"{addr}\"}} {limit}"
            );
        }
        out
    }
}

/// The HELP and TYPE lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A request head, as far as this endpoint reads one.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    Head { method: &'a str, path: &'a str },
    Bad,
    TooLarge,
}

/// The request line of a complete head in `bytes`, or None while incomplete.
fn parse_head(bytes: &[u8]) -> Option<Request<'_>> {
    let complete =
        bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n");
    if !complete {
        return (bytes.len() >= MAX_HEAD).then_some(Request::TooLarge);
    }
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let Ok(line) = std::str::from_utf8(&bytes[..line_end]) else {
        return Some(Request::Bad);
    };
    let mut words = line.trim_end_matches('\r').split(' ');
    Some(
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some(method), Some(target), Some(version), None)
                if !method.is_empty() && version.starts_with("HTTP/1.") =>
            {
                let path = target.split_once('?').map_or(target, |(p, _)| p);
                Request::Head { method, path }
            }
            _ => Request::Bad,
        },
    )
}

/// One metrics connection: reading its head, writing the answer, then
/// closing (after reading what else the client sent, so that the close does
/// not reset the answer away).
struct Conn {
    stream: TcpStream,
    deadline: Instant,
    head: Vec<u8>,
    out: Option<Vec<u8>>,
    sent: usize,
    closing: bool,
}

impl Conn {
    fn new(stream: TcpStream, now: Instant) -> Conn {
        Conn {
            stream,
            deadline: now + DEADLINE,
            head: Vec::new(),
            out: None,
            sent: 0,
            closing: false,
        }
    }

    /// Go as far as the socket allows; false once the connection is finished
    /// (answered, failed, or past its deadline).
    fn advance(&mut self, now: Instant, answer: impl FnOnce(Request<'_>) -> Vec<u8>) -> bool {
        if now >= self.deadline {
            debug!(
                "metrics: a connection ran past its {}s deadline; closed",
                DEADLINE.as_secs()
            );
            return false;
        }
        let mut buf = [0u8; 2048];
        if self.out.is_none() {
            loop {
                match read_now(&mut self.stream, &mut buf) {
                    Got::Bytes(n) => {
                        self.head.extend_from_slice(&buf[..n]);
                        if let Some(request) = parse_head(&self.head) {
                            self.out = Some(answer(request));
                            break;
                        }
                    }
                    Got::Later => return true,
                    Got::End => return false,
                }
            }
        }
        if let Some(out) = &self.out {
            while self.sent < out.len() {
                match self.stream.write(&out[self.sent..]) {
                    Ok(0) => return false,
                    Ok(n) => self.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
            if !self.closing {
                self.closing = true;
                let _ = self.stream.shutdown(Shutdown::Write);
            }
        }
        // Answered: wait for the client's close, discarding what it sends.
        loop {
            match read_now(&mut self.stream, &mut buf) {
                Got::Bytes(_) => {}
                Got::Later => return true,
                Got::End => return false,
            }
        }
    }
}

/// What one non-blocking read gave.
enum Got {
    Bytes(usize),
    /// Nothing now: the loop will say when there is.
    Later,
    /// The peer closed, or the connection failed.
    End,
}

fn read_now(stream: &mut TcpStream, buf: &mut [u8]) -> Got {
    loop {
        return match stream.read(buf) {
            Ok(0) => Got::End,
            Ok(n) => Got::Bytes(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Got::Later,
            Err(_) => Got::End,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;

    #[test]
    fn request_heads() {
        for (head, expect) in [
            (
                &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Some(Request::Head {
                    method: "GET",
                    path: "/metrics",
                }),
            ),
            (
                b"GET /readyz?verbose HTTP/1.0\n\n",
                Some(Request::Head {
                    method: "GET",
                    path: "/readyz",
                }),
            ),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                Some(Request::Head {
                    method: "POST",
                    path: "/metrics",
                }),
            ),
            (b"GET /metrics HTTP/1.1\r\nHost", None), // incomplete: read more
            (b"GET /metrics\r\n\r\n", Some(Request::Bad)), // HTTP/0.9
            (b"GET  /metrics HTTP/1.1\r\n\r\n", Some(Request::Bad)),
            (b"\xff /x HTTP/1.1\r\n\r\n", Some(Request::Bad)),
        ] {
            assert_eq!(parse_head(head), expect, "{}", head.escape_ascii());
        }
        // A head that never ends is refused once it reaches the limit.
        assert_eq!(parse_head(&vec![b'a'; MAX_HEAD]), Some(Request::TooLarge));
        assert_eq!(parse_head(&vec![b'a'; MAX_HEAD - 1]), None);
    }

    #[test]
    fn exit_causes_from_the_masters_records() {
        type Case = (fn(&mut WorkerSlot), bool, bool, ExitCause);
        let cases: [Case; 9] = [
            (|w| w.ready = true, true, false, ExitCause::Crash),
            (|w| w.ready = true, false, false, ExitCause::Exited),
            (|_| {}, true, false, ExitCause::BootFailure),
            (
                |w| {
                    w.ready = true;
                    w.aborted = Some((Instant::now(), "timeout".into()))
                },
                true,
                false,
                ExitCause::Timeout,
            ),
            // A timeout during a stop is still a timeout; a stop's SIGKILL is the stop.
            (
                |w| w.aborted = Some((Instant::now(), "timeout".into())),
                true,
                true,
                ExitCause::Timeout,
            ),
            (
                |w| {
                    w.ready = true;
                    w.retiring = true;
                    w.killed_for = Some("the stop deadline passed".into())
                },
                true,
                true,
                ExitCause::Stop,
            ),
            (
                |w| {
                    w.ready = true;
                    w.retiring = true;
                    w.wants_recycle = true
                },
                false,
                false,
                ExitCause::MaxRequests,
            ),
            (
                |w| {
                    w.ready = true;
                    w.retiring = true;
                    w.generation = 1
                },
                false,
                false,
                ExitCause::Reload,
            ),
            (
                |w| {
                    w.ready = true;
                    w.retiring = true
                },
                false,
                false,
                ExitCause::ScaleDown,
            ),
        ];
        for (i, (set, crashed, stopping, expect)) in cases.into_iter().enumerate() {
            let mut w = WorkerSlot::new(Pid::from_raw(1), 1, 2, (0, 0), pipe_end());
            set(&mut w);
            assert_eq!(ExitCause::of(&w, crashed, stopping, 2), expect, "case {i}");
        }
    }

    fn pipe_end() -> std::os::fd::OwnedFd {
        nix::unistd::pipe().unwrap().1
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("unix:/a\"b\\c\nd"), "unix:/a\\\"b\\\\c\\nd");
    }
}
