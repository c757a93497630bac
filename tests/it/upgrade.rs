//! USR2: re-execute the (possibly new) binary in place, keeping the sockets, the
//! pid and every request.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::http;
use crate::util::load::Load;
use crate::util::scratch;
use crate::util::{bin, ServerBuilder};

const T: Duration = Duration::from_secs(15);

#[test]
fn usr2_under_load_keeps_the_pid_the_socket_and_every_request() {
    let _exclusive = crate::util::exclusive();
    let dir = scratch("upgrade");
    let pidfile = dir.join("ferricorn.pid");
    let server = ServerBuilder::new("basic:app")
        .workers(2)
        .args(&["-p", pidfile.to_str().unwrap()])
        .start();
    let old_workers: Vec<String> = (0..20)
        .map(|_| http::get(server.addr(), "/pid").unwrap().text())
        .collect();

    let load = Load::start(server.addr(), "/", 16);
    while load.ok_so_far() < 200 {
        std::thread::yield_now();
    }
    server.signal(Signal::SIGUSR2);
    server.wait_log(
        |l| l.contains("upgrading: exec") && l.contains("2 workers keep serving"),
        T,
    );
    server.wait_log(
        |l| l.contains("Upgraded: adopted 2 workers of the previous binary"),
        T,
    );
    server.wait_log_count(
        |l| l.contains("Retiring worker") && l.contains("of the previous generation"),
        2,
        T,
    );
    server.wait_log_count(|l| l.contains("exited (exited with code 0)"), 2, T);
    let after = load.ok_so_far() + 500;
    while load.ok_so_far() < after {
        std::thread::yield_now();
    }
    let report = load.finish();
    assert_eq!(
        report.failed,
        0,
        "{:?}\nlog:\n{}",
        report.errors,
        server.log()
    );

    // Same master pid (so the pidfile and a supervisor's view stay right), new workers.
    assert!(server
        .log()
        .lines()
        .filter(|l| l.contains("Listening at:"))
        .all(|l| l.contains(&format!("[{}]", server.pid))));
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        server.pid.to_string()
    );
    let new_pid = http::get(server.addr(), "/pid").unwrap().text();
    assert!(
        !old_workers.contains(&new_pid),
        "{new_pid} is an old worker"
    );
    server.signal(Signal::SIGTERM);
}

#[test]
fn usr2_runs_the_binary_now_installed_at_the_start_path() {
    let dir = scratch("upgrade-new-binary");
    let exe = dir.join("ferricorn");
    std::fs::copy(bin(), &exe).unwrap();
    let server = ServerBuilder::new("basic:app").program(&exe).start();
    assert_eq!(
        http::get(server.addr(), "/osenv?FERRICORN_TEST_BUILD")
            .unwrap()
            .text(),
        "<unset>"
    );

    // "Install" a new build: a wrapper that marks its environment, renamed over the
    // old path (a running binary cannot be overwritten in place).
    let wrapper = dir.join("new-build");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nFERRICORN_TEST_BUILD=new exec {} \"$@\"\n",
            bin()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&wrapper, &exe).unwrap();

    server.signal(Signal::SIGUSR2);
    server.wait_log_count(|l| l.contains("exited (exited with code 0)"), 1, T);
    server.wait_log_count(|l| l.contains(") ready"), 2, T);
    let mut seen = String::new();
    for _ in 0..50 {
        seen = http::get(server.addr(), "/osenv?FERRICORN_TEST_BUILD")
            .unwrap()
            .text();
        if seen == "new" {
            break;
        }
    }
    assert_eq!(
        seen,
        "new",
        "workers run under the new build; log:\n{}",
        server.log()
    );
    // The handover variables are consumed by the master, never seen by the app.
    for name in ["FERRICORN_LISTEN_FDS", "FERRICORN_SCOREBOARD_FD"] {
        assert_eq!(
            http::get(server.addr(), &format!("/osenv?{name}"))
                .unwrap()
                .text(),
            "<unset>"
        );
    }
}

#[test]
fn a_failed_upgrade_keeps_serving_with_the_current_binary() {
    let dir = scratch("upgrade-missing");
    let exe = dir.join("ferricorn");
    std::fs::copy(bin(), &exe).unwrap();
    let server = ServerBuilder::new("basic:app").program(&exe).start();
    std::fs::remove_file(&exe).unwrap();
    server.signal(Signal::SIGUSR2);
    server.wait_log(
        |l| {
            l.contains("Upgrade failed: cannot exec")
                && l.contains("still running the current binary")
        },
        T,
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    assert!(
        !server.log().contains("Retiring worker"),
        "{}",
        server.log()
    );
}

#[test]
fn a_request_hung_across_an_upgrade_is_killed_at_the_timeout() {
    // The request starts under the old binary and never ends; the new master must
    // still see it in the scoreboard and enforce --timeout on the adopted worker.
    // (--graceful-timeout 60: its retirement alone would not end it within T.)
    let server = ServerBuilder::new("basic:app")
        .workers(1)
        .args(&["--timeout", "3", "--graceful-timeout", "60"])
        .start();
    let mut hung = http::Client::connect(server.addr()).unwrap();
    hung.send(b"GET /slow?3600 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let started = server.wait_log(|l| l.contains("slow request started in"), T);
    let pid = started.rsplit(' ').next().unwrap().trim().to_string();
    server.signal(Signal::SIGUSR2);
    server.wait_log(
        |l| l.contains("Upgraded: adopted 1 workers of the previous binary"),
        T,
    );
    server.wait_log(
        |l| {
            l.contains("WORKER TIMEOUT")
                && l.contains(&format!("(pid: {pid})"))
                && l.contains("in `GET /slow?3600`, over the 3s timeout")
        },
        T,
    );
    server.wait_log(
        |l| {
            l.contains(&format!("(pid: {pid})"))
                && l.contains("was killed by SIGABRT, sent by the master: timeout")
        },
        T,
    );
    assert!(
        hung.read_response(false).is_err(),
        "the hung request gets no response"
    );
    // The master keeps serving, from its own generation.
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    assert_ne!(http::get(server.addr(), "/pid").unwrap().text(), pid);
}
