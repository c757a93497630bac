//! `--threads N` (gunicorn's gthread): N requests at once in one worker.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::http::{self, Client};
use crate::util::ServerBuilder;

const T: Duration = Duration::from_secs(15);

#[test]
fn two_slow_requests_run_at_once_in_one_worker() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--threads", "2"])
        .start();
    assert!(
        server.log().contains("Using worker: gthread"),
        "{}",
        server.log()
    );
    let mut a = Client::connect(server.addr()).unwrap();
    a.send(b"GET /slow?3 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    server.wait_log(|l| l.contains("slow request started"), T);
    let mut b = Client::connect(server.addr()).unwrap();
    b.send(b"GET /slow?3 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    // Both are inside the app at the same time (each sleeps 3 s).
    server.wait_log_count(
        |l| l.contains("slow request started"),
        2,
        Duration::from_secs(2),
    );
    assert_eq!(a.read_response(false).unwrap().status, 200);
    assert_eq!(b.read_response(false).unwrap().status, 200);
}

#[test]
fn a_slow_request_does_not_block_the_other_threads_and_stops_are_still_graceful() {
    let _exclusive = crate::util::exclusive();
    let mut server = ServerBuilder::new("basic:app")
        .args(&["--threads", "4"])
        .start();
    let env = http::get(server.addr(), "/env").unwrap().text();
    assert!(env.contains("\"wsgi.multithread\": true"), "{env}");

    let mut slow = Client::connect(server.addr()).unwrap();
    slow.send(b"GET /slow?2 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    server.wait_log(|l| l.contains("slow request started"), T);
    for _ in 0..10 {
        let start = Instant::now();
        assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
    // TERM: the slow request still completes, then the worker and master exit.
    server.signal(Signal::SIGTERM);
    let resp = slow.read_response(false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&server.wait_exit(T)),
        Some(15),
        "{}",
        server.log()
    );
}

#[test]
fn usr1_and_max_requests_work_across_threads() {
    let server = ServerBuilder::new("basic:app")
        .args(&[
            "--threads",
            "3",
            "--max-requests",
            "20",
            "--access-logfile",
            "-",
        ])
        .start();
    let mut pids = std::collections::BTreeSet::new();
    let deadline = Instant::now() + T;
    while pids.len() < 2 && Instant::now() < deadline {
        pids.insert(http::get(server.addr(), "/pid").unwrap().text());
    }
    assert!(
        pids.len() >= 2,
        "the worker was recycled after 20 requests over its threads: {pids:?}\n{}",
        server.log()
    );
    server.wait_stdout(|l| l.contains("\"GET /pid HTTP/1.1\" 200"), T);
}
