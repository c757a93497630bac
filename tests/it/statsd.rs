//! `--statsd-host`: a real collector socket (UDP on 127.0.0.1, or a unix datagram
//! socket) receives the lines gunicorn's statsd logger would send, and a collector
//! that is not there, or never reads, costs no request anything.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{http, scratch, ServerBuilder};

const T: Duration = Duration::from_secs(10);

/// A statsd collector: every line of every datagram it received, in order.
struct Collector {
    socket: Socket,
    lines: Vec<String>,
}

enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram, PathBuf),
}

impl Collector {
    fn udp() -> Collector {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Collector {
            socket: Socket::Udp(s),
            lines: Vec::new(),
        }
    }

    fn unix(name: &str) -> Collector {
        let path = scratch(name).join("statsd.sock");
        let s = UnixDatagram::bind(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Collector {
            socket: Socket::Unix(s, path),
            lines: Vec::new(),
        }
    }

    /// `--statsd-host`'s value for this collector.
    fn address(&self) -> String {
        match &self.socket {
            Socket::Udp(s) => s.local_addr().unwrap().to_string(),
            Socket::Unix(_, path) => format!("unix://{}", path.display()),
        }
    }

    /// Read datagrams for up to `wait`, or until nothing came for 50 ms after
    /// `done` holds of the lines so far.
    fn read_until(&mut self, done: impl Fn(&[String]) -> bool, wait: Duration) -> &[String] {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            let got = match &self.socket {
                Socket::Udp(s) => s.recv(&mut buf),
                Socket::Unix(s, _) => s.recv(&mut buf),
            };
            match got {
                Ok(n) => {
                    let text = std::str::from_utf8(&buf[..n]).expect("statsd lines are ASCII");
                    self.lines.extend(text.split('\n').map(str::to_string));
                }
                // A quiet 50 ms once the lines are all in: no more are on the way.
                Err(_) if done(&self.lines) => break,
                Err(_) => {}
            }
        }
        &self.lines
    }

    fn count(&self, line: &str) -> usize {
        self.lines.iter().filter(|l| *l == line).count()
    }
}

fn count_of(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

#[test]
fn requests_statuses_and_durations_with_prefix_and_tags_as_gunicorn_sends_them() {
    let mut collector = Collector::udp();
    let server = ServerBuilder::new("basic:app")
        .args(&[
            "--statsd-host",
            &collector.address(),
            "--statsd-prefix",
            "app",
            "--dogstatsd-tags",
            "env:test,role:web",
        ])
        .start();
    let tags = "|#env:test,role:web";
    for _ in 0..5 {
        assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    }
    for _ in 0..3 {
        assert_eq!(http::get(server.addr(), "/missing").unwrap().status, 404);
    }
    let requests = format!("app.gunicorn.requests:1|c|@1.0{tags}");
    let lines = collector.read_until(|l| count_of(l, &requests) >= 8, T);
    assert_eq!(count_of(lines, &requests), 8, "{lines:#?}");
    assert_eq!(
        count_of(
            lines,
            &format!("app.gunicorn.request.status.200:1|c|@1.0{tags}")
        ),
        5,
        "{lines:#?}"
    );
    assert_eq!(
        count_of(
            lines,
            &format!("app.gunicorn.request.status.404:1|c|@1.0{tags}")
        ),
        3,
        "{lines:#?}"
    );
    let durations: Vec<f64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("app.gunicorn.request.duration:"))
        .map(|rest| {
            let ms = rest
                .strip_suffix(&format!("|ms{tags}"))
                .unwrap_or_else(|| panic!("a timer with the tags: {rest}"));
            // Python's float repr, as gunicorn prints it: always a decimal point.
            assert!(ms.contains('.'), "{ms}");
            ms.parse().unwrap()
        })
        .collect();
    assert_eq!(durations.len(), 8, "{lines:#?}");
    assert!(durations.iter().all(|d| *d >= 0.0), "{durations:?}");
    // The master's gauge, sent when the count became 1.
    assert_eq!(
        collector.count(&format!("app.gunicorn.workers:1|g{tags}")),
        1,
        "{:#?}",
        collector.lines
    );
    // Nothing but gunicorn's metric names, each with the prefix and the tags.
    for l in &collector.lines {
        assert!(l.starts_with("app.gunicorn.") && l.ends_with(tags), "{l}");
    }
}

#[test]
fn log_lines_are_counted_by_level_even_below_the_log_level() {
    let mut collector = Collector::udp();
    // --log-level error hides the lines the harness waits for: a socket passed
    // as fd 3 takes connections before the worker is up, and they wait for it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = ServerBuilder::new("basic:app")
        .no_default_bind()
        .fd_3(listener.as_raw_fd())
        .args(&[
            "-b",
            "fd://3",
            "--statsd-host",
            &collector.address(),
            // Hidden by --log-level error, and counted still, as gunicorn counts it.
            "--worker-tmp-dir",
            "/dev/shm",
            "--log-level",
            "error",
            "--timeout",
            "1",
        ])
        .spawn();
    // An app exception: gunicorn's log.exception.
    assert_eq!(http::get(addr, "/error").unwrap().status, 500);
    // A request past --timeout: WORKER TIMEOUT, gunicorn's log.critical.
    let _ = http::get(addr, "/slow?30");
    server.wait_log(|l| l.contains("WORKER TIMEOUT"), T);
    let want = [
        "gunicorn.log.warning:1|c|@1.0",
        "gunicorn.log.exception:1|c|@1.0",
        "gunicorn.log.critical:1|c|@1.0",
        "gunicorn.request.status.500:1|c|@1.0",
    ];
    let lines = collector.read_until(|l| want.iter().all(|w| count_of(l, w) >= 1), T);
    for w in want {
        assert!(count_of(lines, w) >= 1, "no {w}: {lines:#?}");
    }
    assert!(!server.log().contains("[WARNING]"), "{}", server.log());
    // The exception and the timeout are not also counted as plain errors.
    assert_eq!(
        count_of(lines, "gunicorn.log.exception:1|c|@1.0"),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count_of(lines, "gunicorn.log.critical:1|c|@1.0"),
        1,
        "{lines:#?}"
    );
}

#[test]
fn a_unix_datagram_collector_from_the_environment() {
    let mut collector = Collector::unix("statsd-unix");
    let server = ServerBuilder::new("basic:app")
        .env("FERRICORN_STATSD_HOST", &collector.address())
        .start();
    for _ in 0..3 {
        assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    }
    let want = "gunicorn.requests:1|c|@1.0";
    let lines = collector.read_until(|l| count_of(l, want) >= 3, T);
    assert_eq!(count_of(lines, want), 3, "{lines:#?}");
    assert_eq!(
        count_of(lines, "gunicorn.request.status.200:1|c|@1.0"),
        3,
        "{lines:#?}"
    );
}

#[test]
fn a_gunicorn_conf_py_sets_statsd_as_it_does_for_gunicorn() {
    let mut collector = Collector::udp();
    let dir = scratch("statsd-conf");
    std::fs::write(
        dir.join("gunicorn.conf.py"),
        format!(
            "bind = '127.0.0.1:0'\nstatsd_host = '{}'\nstatsd_prefix = 'conf...'\n",
            collector.address()
        ),
    )
    .unwrap();
    let server = ServerBuilder::new("basic:app")
        .no_default_bind()
        .cwd(&dir)
        .start();
    assert!(!server.log().contains("ignored"), "{}", server.log());
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    // gunicorn's prefix rule: trailing dots become one.
    let want = "conf.gunicorn.requests:1|c|@1.0";
    let lines = collector.read_until(|l| count_of(l, want) >= 1, T);
    assert_eq!(count_of(lines, want), 1, "{lines:#?}");
}

#[test]
fn the_workers_gauge_follows_ttin_and_ttou() {
    let mut collector = Collector::udp();
    let server = ServerBuilder::new("basic:app")
        .args(&["--statsd-host", &collector.address()])
        .start();
    collector.read_until(|l| count_of(l, "gunicorn.workers:1|g") == 1, T);
    server.signal(Signal::SIGTTIN);
    server.wait_log_count(|l| l.contains(") ready"), 2, T);
    let lines = collector.read_until(|l| count_of(l, "gunicorn.workers:2|g") == 1, T);
    assert_eq!(count_of(lines, "gunicorn.workers:2|g"), 1, "{lines:#?}");
    server.signal(Signal::SIGTTOU);
    let lines = collector.read_until(|l| count_of(l, "gunicorn.workers:1|g") == 2, T);
    let gauges: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("gunicorn.workers:"))
        .collect();
    assert_eq!(
        gauges,
        [
            "gunicorn.workers:1|g",
            "gunicorn.workers:2|g",
            "gunicorn.workers:1|g"
        ],
        "sent when the count changes, and only then"
    );
}

/// Each process says at most once that metrics are dropped.
fn assert_one_statsd_warning_per_process(log: &str) {
    let mut per_pid: HashMap<&str, usize> = HashMap::new();
    for line in log.lines().filter(|l| l.contains("statsd:")) {
        assert!(line.contains("[WARNING]"), "{line}");
        let pid = line.split("] [").nth(1).unwrap_or_default();
        *per_pid.entry(pid).or_default() += 1;
    }
    assert!(per_pid.values().all(|n| *n == 1), "{log}");
}

#[test]
fn a_collector_that_is_down_full_or_missing_never_fails_a_request() {
    // Nothing listening on the port: sends fail with ECONNREFUSED.
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().to_string();
    drop(closed);
    // A collector that never reads: its queue (10 datagrams by default) fills,
    // and a blocking send would hang the worker from then on.
    let never_read = Collector::unix("statsd-full");
    let missing = format!(
        "unix://{}",
        scratch("statsd-missing").join("nobody.sock").display()
    );
    for host in [closed_port, never_read.address(), missing] {
        let server = ServerBuilder::new("basic:app")
            .args(&["--statsd-host", &host])
            .start();
        let mut client = http::Client::connect(server.addr()).unwrap();
        for i in 0..200 {
            let path = if i % 2 == 0 { "/" } else { "/missing" };
            let status = client.get(path).unwrap().status;
            assert_eq!(status, if i % 2 == 0 { 200 } else { 404 }, "{host}");
        }
        assert_one_statsd_warning_per_process(&server.log());
    }
}
