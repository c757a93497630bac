//! The master keeps the configured number of workers running.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::http;
use crate::util::ServerBuilder;

#[test]
fn a_killed_worker_is_replaced_and_logged() {
    let server = ServerBuilder::new("basic:app").start();
    let old: i32 = http::get(server.addr(), "/pid")
        .unwrap()
        .text()
        .parse()
        .unwrap();
    let killed_at = Instant::now();
    kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
    server.wait_log(
        |l| l.contains(&format!("(pid: {old}) was killed by SIGKILL")),
        Duration::from_secs(2),
    );
    // A new worker serves within 2 s.
    let mut new = None;
    while killed_at.elapsed() < Duration::from_secs(2) {
        if let Ok(resp) = http::get(server.addr(), "/pid") {
            new = Some(resp.text().parse::<i32>().unwrap());
            break;
        }
    }
    let new = new.unwrap_or_else(|| panic!("no worker served within 2 s; log:\n{}", server.log()));
    assert_ne!(new, old);
    assert!(
        killed_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed_at.elapsed()
    );
}

#[test]
fn sigterm_to_one_worker_outside_a_stop_finishes_and_is_replaced() {
    let server = ServerBuilder::new("basic:app").start();
    let old: i32 = http::get(server.addr(), "/pid")
        .unwrap()
        .text()
        .parse()
        .unwrap();
    kill(Pid::from_raw(old), Signal::SIGTERM).unwrap();
    server.wait_log(
        |l| l.contains(&format!("(pid: {old}) exited with code 0")),
        Duration::from_secs(5),
    );
    server.wait_log_count(|l| l.contains(") ready"), 2, Duration::from_secs(10));
    let new: i32 = http::get(server.addr(), "/pid")
        .unwrap()
        .text()
        .parse()
        .unwrap();
    assert_ne!(new, old);
}

#[test]
fn ttin_and_ttou_change_the_worker_count() {
    let server = ServerBuilder::new("basic:app").start();
    server.signal(Signal::SIGTTIN);
    server.wait_log_count(|l| l.contains(") ready"), 2, Duration::from_secs(10));
    server.signal(Signal::SIGTTOU);
    server.wait_log(|l| l.contains("Stopping worker 1"), Duration::from_secs(5));
    server.wait_log(
        |l| l.contains("Worker 1 (pid") && l.contains("exited (exited with code 0)"),
        Duration::from_secs(10),
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn hup_starts_a_new_generation_then_retires_the_old_one() {
    let server = ServerBuilder::new("basic:app").workers(2).start();
    server.signal(Signal::SIGHUP);
    server.wait_log_count(|l| l.contains(") ready"), 4, Duration::from_secs(10));
    server.wait_log_count(
        |l| l.contains("Retiring worker"),
        2,
        Duration::from_secs(10),
    );
    server.wait_log_count(
        |l| l.contains("exited (exited with code 0)"),
        2,
        Duration::from_secs(10),
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}
