//! Apps that fork, run programs or start threads: what they get must be what a
//! plain Python process would give them, and the worker must not notice.

use std::time::Duration;

use crate::util::http::{self, Client};
use crate::util::ServerBuilder;

#[test]
fn an_app_can_fork_and_reap_its_own_child() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    let pid = c.get("/pid").unwrap().text();
    // The worker must not reap the app's children behind its back (ECHILD).
    assert_eq!(c.get("/fork-child").unwrap().text(), "7");
    assert_eq!(c.get("/pid").unwrap().text(), pid);
}

#[test]
fn programs_the_app_runs_inherit_no_sockets_and_ignore_no_signals() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    let resp = c.get("/subprocess-fds").unwrap();
    assert_eq!(resp.status, 200, "{}", server.log());
    let out = resp.text();
    assert!(out.contains("SigIgn"), "{out}");
    assert!(!out.contains("socket:"), "a server socket leaked:\n{out}");
    // Caught handlers never survive exec; ignored signals would.
    for line in out.lines().filter(|l| l.starts_with("SigIgn")) {
        let (name, mask) = line.split_once(':').unwrap();
        let mask = u64::from_str_radix(mask.trim(), 16).unwrap();
        for sig in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPIPE,
        ] {
            assert_eq!(
                mask & (1 << (sig - 1)),
                0,
                "{name} has signal {sig}:\n{out}"
            );
        }
    }
}

#[test]
fn a_child_the_app_forks_dies_by_term_and_the_worker_takes_no_notice() {
    let server = ServerBuilder::new("basic:app").start();
    let pid = http::get(server.addr(), "/pid").unwrap().text();
    // With the worker's handlers inherited, the child would only note the TERM
    // in the worker's signal pipe: it would live, and the worker would stop.
    assert_eq!(
        http::get(server.addr(), "/fork-term").unwrap().text(),
        "exit -15"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(http::get(server.addr(), "/pid").unwrap().text(), pid);
}

#[test]
fn a_multiprocessing_pool_terminates_and_the_worker_does_not_stop() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    let pid = c.get("/pid").unwrap().text();
    // terminate() sends SIGTERM to the pool's forked children. Had they kept the
    // worker's handlers, they would not die (join would hang) and the worker
    // would take their TERMs for its own.
    let resp = c.get("/pool-terminate").unwrap();
    assert_eq!(resp.status, 200, "{}", server.log());
    assert!(
        resp.text().contains("\"squares\": [1, 2, 3]"),
        "{}",
        resp.text()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.get("/pid").unwrap().text(), pid);
    let log = server.log();
    assert!(
        !log.contains("shutting down") && !log.contains("Worker exiting"),
        "{log}"
    );
}

#[test]
fn threads_started_by_the_app_run_while_the_worker_waits_for_requests() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    assert_eq!(c.get("/start-ticker").unwrap().text(), "started");
    // The thread ticks every 10 ms, but only if the idle loop released the GIL.
    std::thread::sleep(Duration::from_millis(500));
    let ticks: i64 = c.get("/ticks").unwrap().text().parse().unwrap();
    assert!(ticks >= 10, "{ticks} ticks in 500 ms");
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}
