//! The master keeps the configured number of workers running.

use std::os::unix::process::ExitStatusExt;
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

#[test]
fn a_reload_whose_app_fails_to_load_keeps_the_old_workers_serving() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("changing.py"),
        "def app(e, sr):\n    sr('200 OK', [])\n    return [b'v1']\n",
    )
    .unwrap();
    let mut server = ServerBuilder::new("changing:app")
        .chdir(&dir)
        .workers(2)
        .start();
    assert_eq!(http::get(server.addr(), "/").unwrap().text(), "v1");

    std::fs::write(dir.join("changing.py"), "import no_such_dependency\n").unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_log(
        |l| l.contains("Reload failed: keeping the 2 workers of the previous generation"),
        Duration::from_secs(10),
    );
    assert_eq!(
        http::get(server.addr(), "/").unwrap().text(),
        "v1",
        "still serving the old code"
    );

    // A good reload after that works.
    std::fs::write(
        dir.join("changing.py"),
        "def app(e, sr):\n    sr('200 OK', [])\n    return [b'v2']\n",
    )
    .unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_log_count(
        |l| l.contains("Retiring worker"),
        2,
        Duration::from_secs(10),
    );
    // Once the old workers have handled their TERM, only the new code answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline && last != "v2" {
        last = http::get(server.addr(), "/").unwrap().text();
    }
    assert_eq!(last, "v2", "log:\n{}", server.log());
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).signal().is_some());
}
