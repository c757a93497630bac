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
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app").workers(2).start();
    under_load(
        &server,
        || server.signal(Signal::SIGHUP),
        || server.log().matches("exited (exited with code 0)").count() >= 2,
    );
}

#[test]
fn max_requests_recycling_under_load_loses_nothing() {
    let _exclusive = crate::util::exclusive();
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
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app").workers(3).start();
    under_load(
        &server,
        || server.signal(Signal::SIGTTOU),
        || server.log().contains("exited (exited with code 0)"),
    );
}

/// What wrk reported: requests, socket errors (connect+read+write+timeout), non-2xx.
struct Wrk {
    requests: u64,
    socket_errors: u64,
    non_2xx: u64,
    output: String,
}

/// `wrk -t1 -c64 -d{secs}s` against `addr`, in the background; `during` runs once
/// wrk is under way. Bounded by wrk's own duration.
fn wrk_during(addr: std::net::SocketAddr, secs: u32, during: impl FnOnce()) -> Wrk {
    let child = std::process::Command::new("wrk")
        .args([
            "-t1",
            "-c64",
            &format!("-d{secs}s"),
            &format!("http://{addr}/"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wrk is installed (./scripts/test installs it)");
    std::thread::sleep(Duration::from_secs(2)); // let wrk's 64 connections get going (the load itself is the point)
    during();
    let out = child.wait_with_output().unwrap();
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let number_after = |label: &str| -> Option<u64> {
        let line = output.lines().find(|l| l.contains(label))?;
        Some(
            line.split(|c: char| !c.is_ascii_digit())
                .filter(|t| !t.is_empty())
                .filter_map(|t| t.parse::<u64>().ok())
                .sum(),
        )
    };
    let requests = output
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Wrk {
        requests,
        socket_errors: number_after("Socket errors").unwrap_or(0),
        non_2xx: number_after("Non-2xx").unwrap_or(0),
        output,
    }
}

fn assert_clean(w: &Wrk, server: &crate::util::Server) {
    assert!(w.requests > 1000, "wrk did not run: {}", w.output);
    assert_eq!(
        (w.socket_errors, w.non_2xx),
        (0, 0),
        "wrk saw failures:\n{}\nlog:\n{}",
        w.output,
        server.log()
    );
}

#[test]
fn wrk_sees_no_error_through_a_hup_a_usr2_and_max_requests_recycling() {
    let _exclusive = crate::util::exclusive();
    // As the issue asks: ~10 s of wrk with 64 connections around each change.
    let server = ServerBuilder::new("basic:app").workers(2).start();
    let w = wrk_during(server.addr(), 8, || server.signal(Signal::SIGHUP));
    server.wait_log_count(
        |l| l.contains("Retiring worker"),
        2,
        Duration::from_secs(10),
    );
    assert_clean(&w, &server);

    let w = wrk_during(server.addr(), 8, || server.signal(Signal::SIGUSR2));
    server.wait_log(
        |l| l.contains("Upgraded: adopted 2 workers"),
        Duration::from_secs(10),
    );
    assert_clean(&w, &server);

    let recycling = ServerBuilder::new("basic:app")
        .workers(2)
        .args(&["--max-requests", "500"])
        .start();
    let w = wrk_during(recycling.addr(), 8, || {});
    assert_clean(&w, &recycling);
    assert!(
        recycling.log().matches("its replacement is ready").count() >= 4,
        "{}",
        recycling.log()
    );
}
