//! Replacing workers under load loses no request: reload (HUP), --max-requests
//! recycling, and scaling down (TTOU), each under continuous keep-alive traffic.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::load::Load;
use crate::util::ServerBuilder;

const CLIENTS: usize = 16;

/// Run load, do `act` once traffic flows, keep the load going until `done` holds
/// (bounded), and assert not one request failed.
fn under_load(server: &crate::util::Server, act: impl FnOnce(), done: impl Fn() -> bool) {
    let load = Load::start(server.addr(), "/", CLIENTS);
    let warm = Instant::now() + Duration::from_secs(10);
    while load.ok_so_far() < 200 && Instant::now() < warm {
        std::thread::yield_now();
    }
    act();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50)); // polling a condition, bounded
    }
    // A little more traffic after the change settled.
    let after = load.ok_so_far() + 500;
    let settle = Instant::now() + Duration::from_secs(5);
    while load.ok_so_far() < after && Instant::now() < settle {
        std::thread::yield_now();
    }
    let report = load.finish();
    assert!(
        done(),
        "the change did not complete; log:\n{}",
        server.log()
    );
    assert_eq!(
        report.failed,
        0,
        "{} of {} requests failed: {:?}\nlog:\n{}",
        report.failed,
        report.ok + report.failed,
        report.errors,
        server.log()
    );
    assert!(
        report.ok >= 700,
        "too little traffic to mean anything: {}",
        report.ok
    );
}

#[test]
fn hup_under_load_loses_nothing() {
    let server = ServerBuilder::new("basic:app").workers(2).start();
    under_load(
        &server,
        || server.signal(Signal::SIGHUP),
        || server.log().matches("exited (exited with code 0)").count() >= 2,
    );
}

#[test]
fn max_requests_recycling_under_load_loses_nothing() {
    let server = ServerBuilder::new("basic:app")
        .workers(2)
        .args(&["--max-requests", "500", "--max-requests-jitter", "50"])
        .start();
    under_load(
        &server,
        || {},
        || server.log().matches("its replacement is ready").count() >= 4,
    );
}

#[test]
fn ttou_under_load_loses_nothing() {
    let server = ServerBuilder::new("basic:app").workers(3).start();
    under_load(
        &server,
        || server.signal(Signal::SIGTTOU),
        || server.log().contains("exited (exited with code 0)"),
    );
}
