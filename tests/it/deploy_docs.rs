//! The deployment pages show files a user copies: docs/docker.md's `CMD` and
//! docs/systemd.md's unit are run here as written (with the test venv and a
//! loopback port in place of the page's), and stopped as Docker and systemd stop
//! them. (docs/heroku.md's Procfile: tests/it/procfile.rs.)

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::notify::{field, is, Systemd};
use crate::util::{http, repo_dir, scratch, test_venv, ServerBuilder};

const STOP: Duration = Duration::from_secs(30);

/// The first fenced block of `doc` (a path under the repo) whose info string is
/// `info`.
pub fn doc_block(doc: &str, info: &str) -> String {
    let text = std::fs::read_to_string(repo_dir().join(doc)).unwrap();
    let opening = format!("```{info}\n");
    let start = text
        .find(&opening)
        .unwrap_or_else(|| panic!("no ```{info} block in {doc}"))
        + opening.len();
    let end = start + text[start..].find("\n```").expect("a closed block");
    text[start..end].to_string()
}

/// An app directory with the pages' `app:create_app()`: a Flask app whose `/slow`
/// takes a second (a request in flight when the stop comes).
pub fn flask_app_dir(name: &str) -> PathBuf {
    let dir = scratch(name);
    std::fs::write(
        dir.join("app.py"),
        "import time\nfrom flask import Flask\n\n\ndef create_app():\n    app = Flask(__name__)\n\n    @app.get('/')\n    def index():\n        return 'deployed'\n\n    @app.get('/slow')\n    def slow():\n        time.sleep(1)\n        return 'slow answered'\n\n    return app\n",
    )
    .unwrap();
    dir
}

/// The page's paths and port become the test's.
fn localize(arg: &str, venv_on_page: &str) -> String {
    arg.replace(venv_on_page, &test_venv().display().to_string())
        .replace("0.0.0.0:8000", "127.0.0.1:0")
        .replace("127.0.0.1:8000", "127.0.0.1:0")
}

/// Start `/slow`, wait until the app has it, then `stop()`; returns the answer.
fn answered_across(addr: std::net::SocketAddr, stop: impl FnOnce()) -> String {
    let request = std::thread::spawn(move || http::get(addr, "/slow").map(|r| r.text()));
    std::thread::sleep(Duration::from_millis(300)); // the request is inside its 1 s sleep
    stop();
    request
        .join()
        .unwrap()
        .expect("the request in flight is answered")
}

#[test]
fn the_docker_pages_cmd_runs_as_pid_1_and_docker_stop_reads_143() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: creating a PID namespace needs root");
        return;
    }
    let dockerfile = doc_block("docs/docker.md", "dockerfile");
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD line");
    let argv: Vec<String> = cmd
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|a| localize(a.trim().trim_matches('"'), "/venv"))
        .collect();
    let app = flask_app_dir("docker-app");
    let mut server = ServerBuilder::command(Path::new(&argv[0]), &argv[1..])
        .wrapped_in(&["unshare", "--pid", "--fork", "--kill-child"])
        .cwd(&app)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .start();
    assert_eq!(http::get(server.addr(), "/").unwrap().text(), "deployed");
    assert!(
        server.log().contains("] [1] [INFO]"),
        "PID 1: {}",
        server.log()
    );
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", server.pid)).unwrap();
    let master: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // docker stop: SIGTERM to PID 1 (SIGKILL only 10 s later).
    let answer = answered_across(server.addr(), || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(master), Signal::SIGTERM).unwrap()
    });
    assert_eq!(answer, "slow answered");
    let status = server.wait_exit(STOP);
    assert_eq!(status.code(), Some(143), "{}", server.log());
}

#[test]
fn the_systemd_pages_unit_verifies_serves_reloads_and_stops_cleanly() {
    let unit = doc_block("docs/systemd.md", "ini");
    let app = flask_app_dir("systemd-app");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .to_string()
    };
    let exec_start: Vec<String> = value("ExecStart")
        .split_whitespace()
        .map(|a| localize(a, "/srv/app/venv"))
        .collect();
    assert_eq!(value("WorkingDirectory"), "/srv/app");
    assert_eq!(value("Type"), "notify-reload");
    // The master, not systemd's SIGKILL, decides what a stop cuts.
    let stop_timeout: u64 = value("TimeoutStopSec").parse().unwrap();
    assert!(
        stop_timeout > 25 && !exec_start.iter().any(|a| a.contains("graceful")),
        "TimeoutStopSec={stop_timeout} must be above --graceful-timeout (25 s)"
    );
    let watchdog_sec: u64 = value("WatchdogSec").parse().unwrap();

    // systemd's own check of the unit, with the test's paths and a user that exists.
    if let Ok(version) = Command::new("systemd-analyze").arg("--version").output() {
        let file = scratch("systemd-unit").join("app.service");
        let mut localized = unit
            .replace("/srv/app/venv", &test_venv().display().to_string())
            .replace("/srv/app", &app.display().to_string())
            .replace("User=app", "User=root")
            .replace("Group=app", "Group=root");
        // "systemd 252 (252.38-1~deb12u1)": before 253, the page's older form.
        let major: u32 = String::from_utf8_lossy(&version.stdout)
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if major < 253 {
            localized = localized.replace(
                "Type=notify-reload\n",
                "Type=notify\nExecReload=/bin/kill -HUP $MAINPID\n",
            );
        }
        std::fs::write(&file, localized).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&file)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !said.contains("app.service"),
            "systemd-analyze verify: {said}"
        );
    } else {
        eprintln!("systemd-analyze is not installed: the unit's syntax is not checked");
    }

    // What systemd sets for Type=notify with WatchdogSec=.
    let mut systemd = Systemd::at_path("systemd-notify-socket");
    let mut server = ServerBuilder::command(Path::new(&exec_start[0]), &exec_start[1..])
        .cwd(&app)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("NOTIFY_SOCKET", &systemd.name)
        .env("WATCHDOG_USEC", &(watchdog_sec * 1_000_000).to_string())
        .workers(4)
        .start();
    let ready = systemd.wait(is("READY"), &server);
    assert_eq!(
        field(&ready, "MAINPID"),
        Some(server.pid.to_string().as_str())
    );
    systemd.wait(is("WATCHDOG"), &server);
    assert_eq!(http::get(server.addr(), "/").unwrap().text(), "deployed");
    // systemctl reload: the unit's ReloadSignal=, SIGHUP, starts a new generation of 4.
    server.signal(Signal::SIGHUP);
    systemd.wait(is("RELOADING"), &server);
    systemd.wait(is("READY"), &server);
    server.wait_log_count(|l| l.contains(") ready"), 8, STOP);
    assert_eq!(http::get(server.addr(), "/").unwrap().text(), "deployed");
    // systemctl stop, KillMode=mixed: SIGTERM to the main process.
    let answer = answered_across(server.addr(), || server.signal(Signal::SIGTERM));
    assert_eq!(answer, "slow answered");
    systemd.wait(is("STOPPING"), &server);
    let status = server.wait_exit(STOP);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{}", server.log());
}

/// The wheel scripts/test built (dist/), for the pages that ship it in `wheels/`.
pub fn built_wheel() -> PathBuf {
    let dist = repo_dir().join("dist");
    std::fs::read_dir(&dist)
        .unwrap_or_else(|e| panic!("{}: {e}; run ./scripts/test", dist.display()))
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("a wheel in dist/: run ./scripts/test")
}
