//! The exit contract: what each stopping signal does and the status a shell reads.
//! One test per row of docs/signals.md.

use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::http::Client;
use crate::util::{Server, ServerBuilder};

const STOP: Duration = Duration::from_secs(15);

/// Start a 2 s request and wait until the app is inside it.
fn request_in_flight(server: &Server) -> Client {
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"GET /slow?2 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    server.wait_log(
        |l| l.contains("slow request started"),
        Duration::from_secs(10),
    );
    c
}

/// After the master has handled the stop, nobody accepts on the port any more.
fn assert_refused(server: &Server) {
    server.wait_log(|l| l.contains("Handling signal:"), Duration::from_secs(5));
    let err = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(2))
        .expect_err("a new connection after the stop signal must be refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

fn graceful_stop_case(args: &[&str], group: bool) -> (std::process::ExitStatus, Server) {
    let mut server = ServerBuilder::new("basic:app")
        .args(args)
        .workers(2)
        .start();
    let mut c = request_in_flight(&server);
    let sent = Instant::now();
    if group {
        server.signal_group(Signal::SIGTERM);
    } else {
        server.signal(Signal::SIGTERM);
    }
    assert_refused(&server);
    let resp = c
        .read_response(false)
        .expect("the in-flight request completes");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "slow done\n");
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "a stopping worker closes the connection"
    );
    let status = server.wait_exit(STOP);
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "stopped promptly after the request: {:?}",
        sent.elapsed()
    );
    assert!(
        !server.log().contains("Booting worker with pid")
            || server.log().matches("Booting worker with pid").count() == 2,
        "no respawn during the stop:\n{}",
        server.log()
    );
    (status, server)
}

#[test]
fn sigterm_drains_the_in_flight_request_and_dies_by_sigterm() {
    let (status, server) = graceful_stop_case(&[], false);
    assert_eq!(
        status.signal(),
        Some(15),
        "a shell reads 143; log:\n{}",
        server.log()
    );
    assert_eq!(Server::shell_status(status), 143);
    server.wait_log(
        |l| {
            l.contains("Shutting down: graceful stop after SIGTERM")
                && l.contains("exiting with SIGTERM (status 143)")
        },
        STOP,
    );
}

#[test]
fn sigterm_to_the_whole_process_group_behaves_the_same() {
    // Heroku, systemd and Docker's init signal every process: the workers get
    // SIGTERM directly too, and must neither drop the request nor be respawned.
    let (status, server) = graceful_stop_case(&[], true);
    assert_eq!(status.signal(), Some(15), "log:\n{}", server.log());
}

#[test]
fn term_exit_0_reproduces_gunicorn() {
    let (status, server) = graceful_stop_case(&["--term-exit", "0"], false);
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
}

#[test]
fn term_exit_3_exits_3() {
    let (status, server) = graceful_stop_case(&["--term-exit", "3"], true);
    assert_eq!(status.code(), Some(3), "log:\n{}", server.log());
}

#[test]
fn sigint_cuts_the_in_flight_request_and_dies_by_sigint() {
    let _exclusive = crate::util::exclusive();
    let mut server = ServerBuilder::new("basic:app").start();
    let mut c = request_in_flight(&server);
    let sent = Instant::now();
    server.signal(Signal::SIGINT);
    let status = server.wait_exit(STOP);
    assert!(
        c.read_response(false).is_err(),
        "the request was cut, not answered"
    );
    assert!(
        sent.elapsed() < Duration::from_millis(1900),
        "quick stop did not wait for the request: {:?}",
        sent.elapsed()
    );
    assert_eq!(
        status.signal(),
        Some(2),
        "a shell reads 130; log:\n{}",
        server.log()
    );
}

#[test]
fn sigquit_is_a_quick_stop_and_dies_by_sigquit() {
    let mut server = ServerBuilder::new("basic:app").allow_core_dumps().start();
    let mut c = request_in_flight(&server);
    server.signal_group(Signal::SIGQUIT);
    let status = server.wait_exit(STOP);
    assert!(c.read_response(false).is_err(), "the request was cut");
    // The master dies by SIGQUIT (131 in a shell) but without dumping core, even
    // where core files are allowed: it is a requested stop, not a crash.
    assert_eq!(status.signal(), Some(3), "log:\n{}", server.log());
    assert!(!status.core_dumped(), "SIGQUIT exit must not dump core");
}

#[test]
fn int_exit_and_quit_exit_choose_codes() {
    let mut server = ServerBuilder::new("basic:app")
        .args(&["--int-exit", "0"])
        .start();
    server.signal(Signal::SIGINT);
    assert_eq!(server.wait_exit(STOP).code(), Some(0));
    let mut server = ServerBuilder::new("basic:app")
        .args(&["--quit-exit", "7"])
        .start();
    server.signal(Signal::SIGQUIT);
    assert_eq!(server.wait_exit(STOP).code(), Some(7));
}

#[test]
fn a_repeated_sigterm_changes_nothing() {
    let mut server = ServerBuilder::new("basic:app").start();
    let mut c = request_in_flight(&server);
    server.signal(Signal::SIGTERM);
    server.wait_log(
        |l| l.contains("Handling signal: term"),
        Duration::from_secs(5),
    );
    server.signal_group(Signal::SIGTERM);
    server.wait_log(|l| l.contains("already stopping"), Duration::from_secs(5));
    assert_eq!(c.read_response(false).unwrap().status, 200);
    assert_eq!(server.wait_exit(STOP).signal(), Some(15));
}

#[test]
fn sigint_during_a_graceful_stop_escalates_to_a_quick_stop() {
    let mut server = ServerBuilder::new("basic:app").start();
    let mut c = request_in_flight(&server);
    server.signal(Signal::SIGTERM);
    server.wait_log(
        |l| l.contains("Handling signal: term"),
        Duration::from_secs(5),
    );
    server.signal(Signal::SIGINT);
    let status = server.wait_exit(STOP);
    assert!(c.read_response(false).is_err(), "the request was cut");
    assert_eq!(
        status.signal(),
        Some(2),
        "the escalating signal decides the exit; log:\n{}",
        server.log()
    );
}

#[test]
fn the_graceful_timeout_kills_what_is_left() {
    let mut server = ServerBuilder::new("basic:app")
        .args(&["--graceful-timeout", "0.5"])
        .start();
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"GET /slow?30 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    server.wait_log(
        |l| l.contains("slow request started"),
        Duration::from_secs(10),
    );
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(STOP);
    // Not a clean stop: a distinct status says the drain deadline was exceeded.
    assert_eq!(status.code(), Some(7), "log:\n{}", server.log());
    server.wait_log(|l| l.contains("sending SIGKILL"), STOP);
    server.wait_log(
        |l| {
            l.contains("0 of 1 requests in flight finished")
                && l.contains("1 killed")
                && l.contains("exiting with exit code 7")
        },
        STOP,
    );
    server.wait_log(
        |l| {
            l.contains(
                "exited (was killed by SIGKILL, sent by the master: the stop deadline passed)",
            )
        },
        STOP,
    );
}

#[test]
fn as_pid_1_the_master_exits_with_128_plus_n() {
    // The kernel ignores a signal that PID 1 raises against itself with the default
    // action, so in a container without an init "die by SIGTERM" becomes exit(143).
    // A new PID namespace makes the master PID 1; that needs root (CI runs as root).
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: creating a PID namespace needs root");
        return;
    }
    let mut server = ServerBuilder::new("basic:app")
        .wrapped_in(&["unshare", "--pid", "--fork", "--kill-child"])
        .start();
    assert!(
        server.log().contains("Listening at: http://127.0.0.1:")
            && server.log().contains("] [1] [INFO]"),
        "{}",
        server.log()
    );
    // `server.pid` is unshare's; the master is its only child.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", server.pid)).unwrap();
    let master: i32 = children
        .split_whitespace()
        .next()
        .expect("unshare has a child")
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(master), Signal::SIGTERM).unwrap();
    let status = server.wait_exit(STOP);
    // unshare passes its child's exit code on.
    assert_eq!(status.code(), Some(143), "log:\n{}", server.log());
    assert!(
        server.log().contains("exiting with exit code 143"),
        "{}",
        server.log()
    );
}

#[test]
fn docs_signals_md_shows_what_ferricorn_signals_prints() {
    let out = std::process::Command::new(crate::util::bin())
        .arg("signals")
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("| TERM | graceful-stop | 143 (dies by SIGTERM) |"),
        "{table}"
    );
    let doc = std::fs::read_to_string(crate::util::repo_dir().join("docs/signals.md")).unwrap();
    assert!(doc.contains(&table), "docs/signals.md must contain the default table exactly as `ferricorn signals` prints it:\n{table}");
}

#[test]
fn ferricorn_signals_takes_the_same_options_as_a_run() {
    let out = std::process::Command::new(crate::util::bin())
        .args([
            "signals",
            "--signal-preset",
            "gunicorn",
            "--on-signal",
            "HUP=graceful-stop:3",
            "--term-exit",
            "signal",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("| TERM | graceful-stop | 143 (dies by SIGTERM) |"),
        "--term-exit wins over the preset: {table}"
    );
    assert!(
        table.contains("| INT | quick-stop | 0 (exit code) |"),
        "{table}"
    );
    assert!(
        table.contains("| HUP | graceful-stop | 3 (exit code) |"),
        "{table}"
    );
    let bad = std::process::Command::new(crate::util::bin())
        .args(["signals", "--on-signal", "KILL=ignore"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "a bad value is a config error");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not a signal ferricorn lets you configure")
    );
}

#[test]
fn on_signal_overrides_change_what_a_signal_does() {
    let mut server = ServerBuilder::new("basic:app")
        .args(&["--on-signal", "HUP=graceful-stop:0"])
        .start();
    let mut c = request_in_flight(&server);
    server.signal(Signal::SIGHUP);
    assert_eq!(c.read_response(false).unwrap().status, 200);
    assert_eq!(
        server.wait_exit(STOP).code(),
        Some(0),
        "log:\n{}",
        server.log()
    );

    let server = ServerBuilder::new("basic:app")
        .args(&["--on-signal", "TERM=ignore"])
        .start();
    server.signal(Signal::SIGTERM);
    server.wait_log(
        |l| l.contains("Handling signal: term"),
        Duration::from_secs(5),
    );
    assert_eq!(
        crate::util::http::get(server.addr(), "/").unwrap().status,
        200,
        "TERM ignored: still serving"
    );
}

#[test]
fn the_gunicorn_preset_exits_0_on_term() {
    let (status, server) = graceful_stop_case(&["--signal-preset", "gunicorn"], true);
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
}

#[test]
fn the_stop_line_counts_requests_in_flight_and_names_the_sender() {
    let (_, server) = graceful_stop_case(&[], false);
    let me = std::process::id();
    server.wait_log(
        |l| l.contains(&format!("Shutting down: graceful stop after SIGTERM from pid {me}; 1 of 1 requests in flight finished; 2 of 2 workers stopped in time, 0 killed")),
        STOP,
    );
}
