//! `--metrics-bind`: `/metrics` parsed with prometheus_client's own text parser
//! (in the test venv), `/livez` and `/readyz`, and a metrics client that cannot
//! hold up the master (docs/metrics.md).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::http::{self, Client, Response};
use crate::util::{test_venv, worker_pid, Server, ServerBuilder};

const T: Duration = Duration::from_secs(15);

/// Start basic.py with `--metrics-bind 127.0.0.1:0`; the metrics address is the
/// one the master's log line names.
fn start(workers: usize, args: &[&str]) -> (Server, SocketAddr) {
    let server = ServerBuilder::new("basic:app")
        .args(&["--metrics-bind", "127.0.0.1:0"])
        .args(args)
        .workers(workers)
        .start();
    let line = server.wait_log(|l| l.contains("Metrics at: http://"), T);
    let addr = line
        .split("Metrics at: http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("an address in {line}"));
    (server, addr)
}

/// GET on the metrics port, with a short read timeout: an answer that does not
/// come promptly means the master loop is not serving it.
fn get(addr: SocketAddr, path: &str) -> Response {
    let mut c = Client::connect(addr).expect("connect to the metrics port");
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    c.get(path)
        .unwrap_or_else(|e| panic!("GET {path} on the metrics port: {e}"))
}

/// A scrape, as prometheus_client's parser reads it: `name{k="v",…}` (labels
/// sorted) → value, plus `TYPE name` → the family's type.
struct Scrape(HashMap<String, String>);

const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print(f"TYPE {family.name}\t{family.type}")
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}}\t{s.value!r}")
"#;

fn scrape(addr: SocketAddr) -> Scrape {
    let resp = get(addr, "/metrics");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut child = Command::new(test_venv().join("bin/python"))
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test venv's python (scripts/test installs prometheus-client there)");
    child.stdin.take().unwrap().write_all(&resp.body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse the scrape: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        resp.text()
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Scrape(
        text.lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

impl Scrape {
    /// The value of a sample; panics if the scrape lacks it.
    fn value(&self, sample: &str) -> f64 {
        self.0
            .get(sample)
            .unwrap_or_else(|| panic!("no sample {sample} in {:#?}", self.0))
            .parse()
            .unwrap()
    }

    fn requests(&self, method: &str, class: &str) -> f64 {
        self.value(&format!(
            "ferricorn_requests_total{{method=\"{method}\",status_class=\"{class}\"}}"
        ))
    }

    fn count(&self) -> f64 {
        self.value("ferricorn_request_duration_seconds_count{}")
    }
}

/// Scrape until `done` holds (a worker adds to its counters just after the
/// response is handed to the socket), up to a deadline; the last scrape.
fn scrape_until(addr: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + T;
    loop {
        let s = scrape(addr);
        if done(&s) || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20)); // polling a condition, bounded
    }
}

#[test]
fn counters_move_by_exactly_n_and_survive_a_killed_worker() {
    let (server, metrics) = start(2, &[]);
    let app = server.addr();
    let victim = worker_pid(app);
    let before = scrape_until(metrics, |s| s.count() >= 1.0);
    assert_eq!(before.0["TYPE ferricorn_requests"], "counter");
    assert_eq!(
        before.0["TYPE ferricorn_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(before.0["TYPE ferricorn_requests_in_flight"], "gauge");
    for _ in 0..3 {
        assert_eq!(http::get(app, "/").unwrap().status, 200);
    }
    for _ in 0..2 {
        assert_eq!(http::get(app, "/no-such-page").unwrap().status, 404);
    }
    for _ in 0..4 {
        assert_eq!(http::post(app, "/echo", b"hi").unwrap().status, 200);
    }
    let n = 9.0;
    let after = scrape_until(metrics, |s| s.count() >= before.count() + n);
    assert_eq!(after.count() - before.count(), n);
    assert_eq!(
        after.requests("GET", "2xx") - before.requests("GET", "2xx"),
        3.0
    );
    assert_eq!(
        after.requests("GET", "4xx") - before.requests("GET", "4xx"),
        2.0
    );
    assert_eq!(
        after.requests("POST", "2xx") - before.requests("POST", "2xx"),
        4.0
    );
    assert_eq!(
        after.requests("POST", "4xx"),
        before.requests("POST", "4xx")
    );
    assert_eq!(after.requests("PUT", "2xx"), 0.0);
    let inf = "ferricorn_request_duration_seconds_bucket{le=\"+Inf\"}";
    assert_eq!(after.value(inf), after.count());
    assert_eq!(after.value("ferricorn_workers{state=\"ready\"}"), 2.0);
    assert_eq!(after.value("ferricorn_ready{}"), 1.0);
    let crashes = "ferricorn_worker_exits_total{cause=\"crash\"}";
    assert_eq!(after.value(crashes), 0.0);
    let backlog = format!("ferricorn_listen_backlog{{listener=\"http://{app}\"}}");
    assert_eq!(after.value(&backlog), 0.0);
    let limit = format!("ferricorn_listen_backlog_limit{{listener=\"http://{app}\"}}");
    assert!(after.value(&limit) >= 1.0);

    // A worker killed from outside: the master respawns it, and what it counted
    // stays counted.
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    server.wait_log(
        |l| l.contains(&format!("(pid: {victim}) was killed by SIGKILL")),
        T,
    );
    server.wait_log_count(|l| l.contains(") ready"), 3, T);
    let respawned = scrape_until(metrics, |s| {
        s.value("ferricorn_workers{state=\"ready\"}") == 2.0
    });
    assert_eq!(
        respawned.count(),
        after.count(),
        "no reset after a worker died"
    );
    assert_eq!(
        respawned.requests("GET", "2xx"),
        after.requests("GET", "2xx")
    );
    assert_eq!(
        respawned.requests("POST", "2xx"),
        after.requests("POST", "2xx")
    );
    assert_eq!(respawned.value(crashes), 1.0);
    for _ in 0..2 {
        assert_eq!(http::get(app, "/").unwrap().status, 200);
    }
    let last = scrape_until(metrics, |s| s.count() >= after.count() + 2.0);
    assert_eq!(last.count() - after.count(), 2.0);
    assert_eq!(
        last.requests("GET", "2xx") - after.requests("GET", "2xx"),
        2.0
    );
}

#[test]
fn counters_survive_a_reload_and_its_exits_count_as_reload() {
    let (server, metrics) = start(1, &[]);
    let app = server.addr();
    for _ in 0..3 {
        assert_eq!(http::get(app, "/").unwrap().status, 200);
    }
    let before = scrape_until(metrics, |s| s.count() >= 3.0);
    assert_eq!(before.count(), 3.0);
    let at = "ferricorn_reload_timestamp_seconds{}";
    server.signal(Signal::SIGHUP);
    // Ready all through the reload: a worker of one generation or the other is.
    let deadline = Instant::now() + T;
    while server
        .try_wait_log(|l| l.contains("exited ("), Duration::ZERO)
        .is_none()
    {
        let ready = get(metrics, "/readyz");
        assert_eq!(ready.status, 200, "during the reload: {}", ready.text());
        assert!(
            Instant::now() < deadline,
            "the reload did not end: {}",
            server.log()
        );
    }
    assert!(server.log().contains("Retiring worker"), "{}", server.log());
    let after = scrape_until(metrics, |s| {
        s.value("ferricorn_worker_exits_total{cause=\"reload\"}") == 1.0
    });
    assert_eq!(
        after.value("ferricorn_worker_exits_total{cause=\"reload\"}"),
        1.0
    );
    assert_eq!(after.count(), 3.0, "no reset after a reload");
    assert_eq!(after.requests("GET", "2xx"), 3.0);
    assert!(
        after.value(at) > before.value(at),
        "the reload's time is the new one"
    );
    assert_eq!(after.value("ferricorn_workers{state=\"ready\"}"), 1.0);
    assert_eq!(get(metrics, "/readyz").status, 200);
    assert_eq!(http::get(app, "/").unwrap().status, 200);
    let last = scrape_until(metrics, |s| s.count() >= 4.0);
    assert_eq!(last.count(), 4.0);
}

#[test]
fn in_flight_is_one_during_a_slow_request() {
    let (server, metrics) = start(1, &[]);
    let in_flight = "ferricorn_requests_in_flight{}";
    assert_eq!(scrape(metrics).value(in_flight), 0.0);
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"GET /slow?2 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    server.wait_log(|l| l.contains("slow request started"), T);
    assert_eq!(scrape(metrics).value(in_flight), 1.0);
    assert_eq!(c.read_response(false).unwrap().status, 200);
    let done = scrape_until(metrics, |s| s.value(in_flight) == 0.0);
    assert_eq!(done.value(in_flight), 0.0);
    // The slow request landed in the buckets above 1 s and below 5 s.
    let bucket = |le: &str| {
        done.value(&format!(
            "ferricorn_request_duration_seconds_bucket{{le=\"{le}\"}}"
        ))
    };
    assert_eq!(bucket("1.0"), 0.0);
    assert_eq!(bucket("5.0"), 1.0);
}

#[test]
fn readyz_is_503_while_a_term_drains_and_livez_stays_200() {
    let (mut server, metrics) = start(1, &[]);
    assert_eq!(get(metrics, "/livez").status, 200);
    let ready = get(metrics, "/readyz");
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"GET /slow?2 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    server.wait_log(|l| l.contains("slow request started"), T);
    server.signal(Signal::SIGTERM);
    server.wait_log(|l| l.contains("Handling signal: term"), T);
    let draining = get(metrics, "/readyz");
    assert_eq!(draining.status, 503, "{}", draining.text());
    assert_eq!(draining.text(), "not ready: stopping\n");
    assert_eq!(
        get(metrics, "/livez").status,
        200,
        "the master loop still runs"
    );
    assert_eq!(scrape(metrics).value("ferricorn_ready{}"), 0.0);
    let resp = c
        .read_response(false)
        .expect("the in-flight request finishes");
    assert_eq!(resp.status, 200);
    server.wait_exit(T);
    assert!(
        TcpStream::connect_timeout(&metrics, Duration::from_secs(2)).is_err(),
        "the metrics port closes with the master"
    );
}

#[test]
fn other_paths_are_404_and_other_methods_405() {
    let (_server, metrics) = start(1, &[]);
    assert_eq!(get(metrics, "/").status, 404);
    assert_eq!(get(metrics, "/metrics/x").status, 404);
    assert_eq!(get(metrics, "/livez?full").status, 200);
    for method in ["POST", "HEAD", "PUT"] {
        let mut c = Client::connect(metrics).unwrap();
        c.send(
            format!("{method} /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let resp = c.read_response(method == "HEAD").unwrap();
        assert_eq!(resp.status, 405, "{method}");
        assert_eq!(resp.header("allow"), Some("GET"), "{method}");
    }
}

#[test]
fn a_silent_metrics_client_holds_up_neither_scrapes_nor_supervision() {
    let (server, metrics) = start(1, &[]);
    // Connects and never sends a byte.
    let mut silent = TcpStream::connect(metrics).unwrap();
    let mut half = TcpStream::connect(metrics).unwrap();
    half.write_all(b"GET /metr").unwrap();
    assert_eq!(
        scrape(metrics).value("ferricorn_workers{state=\"ready\"}"),
        1.0
    );
    let pid = worker_pid(server.addr());
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    server.wait_log_count(|l| l.contains(") ready"), 2, T);
    let s = scrape_until(metrics, |s| {
        s.value("ferricorn_workers{state=\"ready\"}") == 1.0
    });
    assert_eq!(
        s.value("ferricorn_worker_exits_total{cause=\"crash\"}"),
        1.0
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    // The master closes the silent connections at their deadline.
    for conn in [&mut silent, &mut half] {
        conn.set_read_timeout(Some(T)).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(conn.read(&mut buf).unwrap_or(0), 0, "closed, nothing sent");
    }
}

#[test]
fn a_bad_metrics_bind_is_one_config_error_before_anything_binds() {
    for (value, want) in [
        ("localhost", "invalid value `localhost` for `metrics_bind` (from --metrics-bind): expected HOST:PORT"),
        ("unix:/tmp/m.sock", "invalid value `unix:/tmp/m.sock` for `metrics_bind` (from --metrics-bind): expected a TCP HOST:PORT"),
    ] {
        let mut server = ServerBuilder::new("basic:app")
            .args(&["--metrics-bind", value])
            .spawn();
        let status = server.wait_exit(T);
        let log = server.log();
        assert_eq!(status.code(), Some(1), "{log}");
        assert_eq!(log.lines().count(), 1, "one line: {log}");
        assert!(log.contains(want), "{log}");
        assert!(!log.contains("Listening"), "nothing was bound: {log}");
    }
    let mut server = ServerBuilder::new("basic:app")
        .env("FERRICORN_METRICS_BIND", "127.0.0.1:http")
        .spawn();
    let status = server.wait_exit(T);
    let log = server.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("for `metrics_bind` (from environment variable FERRICORN_METRICS_BIND)"),
        "{log}"
    );
}

/// Kubernetes: during `--drain-delay` the pod says it is not ready (so it leaves
/// the endpoints) while it still serves what keeps coming.
#[test]
fn readyz_is_503_during_the_drain_delay_while_requests_are_served() {
    let (mut server, metrics) = start(1, &["--drain-delay", "2"]);
    assert_eq!(get(metrics, "/readyz").status, 200);
    server.signal(Signal::SIGTERM);
    server.wait_log(|l| l.contains("drain delay (--drain-delay)"), T);
    assert_eq!(get(metrics, "/readyz").status, 503);
    assert_eq!(get(metrics, "/livez").status, 200);
    assert_eq!(
        crate::util::http::get(server.addr(), "/").unwrap().status,
        200
    );
    server.wait_exit(T);
}
