//! The master keeps the configured number of workers running.

use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::http;
use crate::util::worker_pid;
use crate::util::ServerBuilder;

#[test]
fn a_killed_worker_is_replaced_and_logged() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app").start();
    let old: i32 = worker_pid(server.addr());
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
    let old: i32 = worker_pid(server.addr());
    kill(Pid::from_raw(old), Signal::SIGTERM).unwrap();
    server.wait_log(
        |l| l.contains(&format!("(pid: {old}) exited with code 0")),
        Duration::from_secs(5),
    );
    server.wait_log_count(|l| l.contains(") ready"), 2, Duration::from_secs(10));
    let new: i32 = worker_pid(server.addr());
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

/// Two workers serving `changing.py` (answering "v1") from a scratch directory
/// that a test then rewrites before a reload.
fn serving_v1(name: &str, args: &[&str]) -> (std::path::PathBuf, crate::util::Server) {
    let dir = crate::util::scratch(name);
    std::fs::write(
        dir.join("changing.py"),
        "def app(e, sr):\n    sr('200 OK', [])\n    return [b'v1']\n",
    )
    .unwrap();
    let server = ServerBuilder::new("changing:app")
        .chdir(&dir)
        .workers(2)
        .args(args)
        .start();
    assert_eq!(http::get(server.addr(), "/").unwrap().text(), "v1");
    (dir, server)
}

#[test]
fn a_reload_whose_app_fails_to_load_keeps_the_old_workers_serving() {
    let (dir, mut server) = serving_v1("reload", &[]);

    std::fs::write(dir.join("changing.py"), "import no_such_dependency\n").unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_log(
        |l| {
            l.contains("Reload failed: App failed to load")
                && l.contains("keeping the 2 workers of the previous generation")
        },
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

/// A new generation whose workers die at boot with a code that is not
/// gunicorn's 3 or 4 (here a native crash stand-in: `os._exit(1)` at import)
/// is given up after `--boot-deadline`, reported, and the old one serves on.
#[test]
fn a_reload_whose_workers_keep_crashing_at_boot_is_given_up_and_reported() {
    let (dir, mut server) = serving_v1("reload-crash", &["--boot-deadline", "2"]);

    std::fs::write(dir.join("changing.py"), "import os\nos._exit(1)\n").unwrap();
    let sent = Instant::now();
    server.signal(Signal::SIGHUP);
    server.wait_log(
        |l| {
            l.contains(
                "Reload failed: workers of the new generation kept dying before they were ready",
            ) && l.contains("keeping the 2 workers of the previous generation")
        },
        Duration::from_secs(15),
    );
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "not before --boot-deadline"
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().text(), "v1");
    // Given up: no more workers are started for the failed generation.
    let booted = server.log().matches("Booting worker with pid").count();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        server.log().matches("Booting worker with pid").count(),
        booted,
        "no respawn after the reload was given up:\n{}",
        server.log()
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().text(), "v1");
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).signal().is_some());
}

#[test]
fn a_request_over_the_timeout_is_killed_with_its_traceback_logged() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--timeout", "1"])
        .start();
    let mut c = crate::util::http::Client::connect(server.addr()).unwrap();
    c.send(b"GET /spin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    server.wait_log(
        |l| l.contains("spin request started"),
        Duration::from_secs(10),
    );
    server.wait_log(
        |l| {
            l.contains("WORKER TIMEOUT: worker 1")
                && l.contains("in `GET /spin`, over the 1s timeout")
        },
        Duration::from_secs(10),
    );
    // faulthandler's dump names the function that hung.
    server.wait_log(
        |l| l.contains("basic.py") && l.contains("in spin"),
        Duration::from_secs(10),
    );
    server.wait_log(
        |l| l.contains("was killed by SIGABRT, sent by the master: timeout"),
        Duration::from_secs(10),
    );
    assert!(
        c.read_response(false).is_err(),
        "the hung request gets no response"
    );
    server.wait_log_count(|l| l.contains(") ready"), 2, Duration::from_secs(10));
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn a_worker_stuck_while_booting_is_killed_at_the_timeout() {
    // gunicorn 22+ never times out a booting worker; ferricorn does.
    let mut server = ServerBuilder::new("slow_boot:app")
        .args(&["--timeout", "1", "--boot-deadline", "3"])
        .spawn();
    server.wait_log(
        |l| {
            l.contains("WORKER TIMEOUT: worker 1")
                && l.contains("did not boot within the 1s timeout")
        },
        Duration::from_secs(10),
    );
    server.wait_log(
        |l| l.contains("in <module>") && l.contains("slow_boot.py"),
        Duration::from_secs(10),
    );
    // It keeps failing, so the master gives up with the crash-loop status.
    let status = server.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(6), "log:\n{}", server.log());
    assert!(
        server
            .log()
            .contains("Giving up: workers kept dying before they were ready"),
        "{}",
        server.log()
    );
}

#[test]
fn a_crash_loop_backs_off_then_gives_up_with_status_6() {
    let mut server = ServerBuilder::new("dies_at_import:app")
        .args(&["--boot-deadline", "2"])
        .spawn();
    let status = server.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(6), "log:\n{}", server.log());
    let log = server.log();
    assert!(
        log.contains("exited with code 1 before it was ready; starting a new one in 0.1s"),
        "{log}"
    );
    assert!(
        log.contains("starting a new one in 0.2s") && log.contains("starting a new one in 0.4s"),
        "backs off: {log}"
    );
    assert!(
        log.matches("Booting worker").count() < 10,
        "no tight respawn loop: {log}"
    );
}

/// While workers keep failing, they boot one at a time: after the first
/// failure, no two boots without an exit between them.
#[test]
fn a_crash_loop_boots_one_worker_at_a_time() {
    let mut server = ServerBuilder::new("dies_at_import:app")
        .workers(2)
        .args(&["--boot-deadline", "2"])
        .spawn();
    assert_eq!(server.wait_exit(Duration::from_secs(20)).code(), Some(6));
    let log = server.log();
    let events: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            if l.contains("Booting worker") {
                Some("boot")
            } else if l.contains("before it was ready") {
                Some("died")
            } else {
                None
            }
        })
        .collect();
    let first_death = events.iter().position(|e| *e == "died").expect("a failure");
    let after = &events[first_death..];
    assert!(
        after.windows(2).all(|w| w != ["boot", "boot"]),
        "{after:?}\n{log}"
    );
    assert!(after.iter().filter(|e| **e == "boot").count() >= 3, "{log}");
}

/// `accept` failing with EMFILE (the worker is out of file descriptors) is
/// retried every 100 ms; the log gets one line per 5 s, not one per retry, and
/// the worker serves again once connections close.
#[test]
fn accept_failing_for_lack_of_fds_is_logged_once_per_interval() {
    let server = ServerBuilder::new("basic:app")
        .wrapped_in(&["prlimit", "--nofile=64:64", "--"])
        .start();
    let flood: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(server.addr()).ok())
        .collect();
    server.wait_log(|l| l.contains("accept failed"), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(2500));
    let lines = server.log().matches("accept failed").count();
    assert_eq!(lines, 1, "{}", server.log());
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answer = http::get(server.addr(), "/");
    while answer.is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        answer = http::get(server.addr(), "/");
    }
    assert_eq!(answer.expect("served after the flood").status, 200);
}

#[test]
fn max_requests_recycles_a_worker_without_failing_a_request() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--max-requests", "5"])
        .start();
    // Every request succeeds, before, during and after the replacement; keep going
    // until three different workers have answered (two replacements).
    let mut pids = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0;
    while pids.len() < 3 && Instant::now() < deadline {
        let resp = http::get(server.addr(), "/pid")
            .unwrap_or_else(|e| panic!("request {sent} failed: {e}\n{}", server.log()));
        assert_eq!(resp.status, 200);
        pids.insert(resp.text());
        sent += 1;
    }
    assert!(
        pids.len() >= 3,
        "workers were replaced: {pids:?} after {sent} requests\n{}",
        server.log()
    );
    server.wait_log(
        |l| l.contains("reached --max-requests; starting its replacement"),
        Duration::from_secs(5),
    );
    server.wait_log(
        |l| l.contains("its replacement is ready"),
        Duration::from_secs(10),
    );
    assert!(
        !server.log().contains("not sent by the master"),
        "{}",
        server.log()
    );
}

#[test]
fn a_worker_that_exits_3_after_it_was_ready_is_replaced_not_fatal() {
    let server = ServerBuilder::new("basic:app").start();
    let pid: i32 = worker_pid(server.addr());
    // Simulate a worker dying with gunicorn's boot-failure code after it served.
    let _ = http::get(server.addr(), "/exit3");
    server.wait_log(
        |l| {
            l.contains(&format!(
                "(pid: {pid}) exited with code 3; starting a new one"
            ))
        },
        Duration::from_secs(10),
    );
    server.wait_log_count(|l| l.contains(") ready"), 2, Duration::from_secs(10));
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn the_pidfile_holds_the_master_pid_while_it_runs() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("pidfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ferricorn.pid");
    let mut server = ServerBuilder::new("basic:app")
        .args(&["-p", path.to_str().unwrap()])
        .start();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", server.pid)
    );

    // A second server with the same pidfile refuses to start, before binding.
    let mut second = ServerBuilder::new("basic:app")
        .args(&["--pid", path.to_str().unwrap()])
        .spawn();
    assert_eq!(second.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(
        second
            .log()
            .contains(&format!("already running there as pid {}", server.pid)),
        "{}",
        second.log()
    );
    assert!(!second.log().contains("Listening at"), "{}", second.log());

    server.signal(Signal::SIGTERM);
    server.wait_exit(Duration::from_secs(10));
    assert!(!path.exists(), "the pidfile is removed at exit");
}

#[test]
fn a_stale_pidfile_naming_a_live_process_that_is_not_ferricorn_is_replaced() {
    // Pids are reused: after a crash the file may name anything alive (here, this
    // test process). Only a running ferricorn master refuses the start.
    let dir = crate::util::scratch("pidfile-stale");
    let path = dir.join("ferricorn.pid");
    std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
    let server = ServerBuilder::new("basic:app")
        .args(&["-p", path.to_str().unwrap()])
        .start();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", server.pid)
    );
    assert!(
        server.log().contains(&format!(
            "the pidfile named pid {}, which is not a ferricorn master: replaced",
            std::process::id()
        )),
        "{}",
        server.log()
    );
    // And nothing else was left in the directory (the temporary file was renamed).
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ferricorn.pid"]);
}

#[test]
fn umask_user_and_group_apply_to_workers() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--umask", "0o027"])
        .start();
    let ids = http::get(server.addr(), "/ids").unwrap().text();
    assert!(ids.ends_with(" 27"), "umask 027: {ids}");
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped the --user/--group half: switching users needs root");
        return;
    }
    let server = ServerBuilder::new("basic:app")
        .args(&["--user", "0", "--group", "65534"])
        .start();
    assert_eq!(
        http::get(server.addr(), "/ids")
            .unwrap()
            .text()
            .rsplit_once(' ')
            .unwrap()
            .0,
        "0 65534"
    );
    // The master keeps its own identity (it can still bind, signal and reap).
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid)).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Gid:\t0\t")),
        "{status}"
    );

    // A user that cannot read the Python installation (pyenv's, under /root): one
    // line naming the directory, exit 1, before anything is bound — not a
    // ModuleNotFoundError in every worker. Where the interpreter is readable by
    // everybody, the same user simply runs the workers.
    let mut server = ServerBuilder::new("basic:app")
        .args(&["--user", "65534", "--group", "65534"])
        .spawn();
    let ready = server.try_wait_log(|l| l.contains(") ready"), Duration::from_secs(20));
    if ready.is_some() {
        server.wait_ready();
        assert_eq!(
            http::get(server.addr(), "/ids")
                .unwrap()
                .text()
                .rsplit_once(' ')
                .unwrap()
                .0,
            "65534 65534"
        );
    } else {
        assert_eq!(
            server.wait_exit(Duration::from_secs(20)).code(),
            Some(1),
            "{}",
            server.log()
        );
        let log = server.log();
        assert!(
            log.contains("the worker user (uid 65534, gid 65534) cannot read /")
                && log.contains("choose another --user")
                && !log.contains("Listening at"),
            "{log}"
        );
    }
}

#[test]
fn a_user_without_a_group_runs_workers_with_its_own_groups_not_roots() {
    // As su, systemd and runuser do: the user's primary group and its
    // supplementary groups (initgroups), not the master's gid 0 and group 0.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    // An interpreter the user can read (pyenv's lives under /root): the venv of
    // Debian's python3 that scripts/test makes.
    let venv = crate::util::repo_dir().join(".venv-system");
    assert!(
        venv.join("bin/ferricorn").exists(),
        "run ./scripts/test (it makes .venv-system)"
    );
    let server = ServerBuilder::new("basic:app")
        .program(&venv.join("bin/ferricorn"))
        .args(&["--user", "nobody"])
        .start();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let gid = nobody.gid.as_raw();
    let name = std::ffi::CString::new("nobody").unwrap();
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
        .unwrap()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let listed: Vec<String> = groups.iter().map(u32::to_string).collect();
    assert_eq!(
        http::get(server.addr(), "/groups").unwrap().text(),
        format!("{} {gid} {}", nobody.uid, listed.join(","))
    );
}

#[test]
fn workers_under_user_keep_writing_both_logs_across_a_rotation() {
    // logrotate renames the files and sends USR1. In a directory only root may
    // write, workers running as another user can neither create the new files nor
    // write ones the master created as root: the master makes them and hands them
    // to the workers' user.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let venv = crate::util::repo_dir().join(".venv-system");
    assert!(venv.join("bin/ferricorn").exists(), "run ./scripts/test");
    let dir = crate::util::scratch("rotate-as-user");
    let (access, errors) = (dir.join("access.log"), dir.join("error.log"));
    let server = ServerBuilder::new("basic:app")
        .program(&venv.join("bin/ferricorn"))
        .args(&["--user", "nobody", "--capture-output"])
        .args(&["--access-logfile", access.to_str().unwrap()])
        .args(&["--error-logfile", errors.to_str().unwrap()])
        .start_with_log_file(&errors);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    for path in [&access, &errors] {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            nobody.uid.as_raw(),
            "{}",
            path.display()
        );
    }
    std::fs::rename(&access, dir.join("access.log.1")).unwrap();
    std::fs::rename(&errors, dir.join("error.log.1")).unwrap();
    server.signal(Signal::SIGUSR1);
    let wait_for = |path: &std::path::Path, want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let _ = http::get(server.addr(), "/say");
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(want) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{want:?} not in {}: {text:?}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50)); // polling a file, bounded
        }
    };
    wait_for(&access, "GET /say");
    wait_for(&errors, "printed by the app");
}

#[test]
fn an_access_log_that_cannot_be_opened_is_refused_before_binding() {
    let mut server = ServerBuilder::new("basic:app")
        .args(&["--access-logfile", "/nonexistent-dir-ferricorn/access.log"])
        .spawn();
    assert_eq!(server.wait_exit(Duration::from_secs(10)).code(), Some(1));
    let log = server.log();
    assert!(
        log.contains("invalid value `/nonexistent-dir-ferricorn/access.log` for `accesslog`")
            && !log.contains("Listening at"),
        "{log}"
    );
}

#[test]
fn the_umask_applies_to_the_error_log() {
    let dir = crate::util::scratch("umask-log");
    let errors = dir.join("error.log");
    let server = ServerBuilder::new("basic:app")
        .args(&[
            "--umask",
            "077",
            "--error-logfile",
            errors.to_str().unwrap(),
        ])
        .start_with_log_file(&errors);
    drop(server);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&errors).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[test]
fn hup_usr2_and_the_masters_other_signals_sent_to_a_worker_are_ignored() {
    // gunicorn's workers die on HUP and USR2 sent to the process group.
    let server = ServerBuilder::new("basic:app").start();
    let pid: i32 = worker_pid(server.addr());
    for sig in [
        Signal::SIGHUP,
        Signal::SIGUSR2,
        Signal::SIGUSR1,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGWINCH,
    ] {
        kill(Pid::from_raw(pid), sig).unwrap();
        assert_eq!(
            http::get(server.addr(), "/pid").unwrap().text(),
            pid.to_string(),
            "after {sig}"
        );
    }
    assert!(!server.log().contains("exited"), "{}", server.log());
}

#[test]
fn int_or_quit_sent_to_a_worker_ends_it_at_once_and_it_is_replaced() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = crate::util::http::Client::connect(server.addr()).unwrap();
    c.send(b"GET /slow?5 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let line = server.wait_log(
        |l| l.contains("slow request started in"),
        Duration::from_secs(10),
    );
    let pid: i32 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let sent = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGQUIT).unwrap();
    assert!(c.read_response(false).is_err(), "the request is cut");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "exits at once: {:?}",
        sent.elapsed()
    );
    server.wait_log(
        |l| {
            l.contains(&format!(
                "(pid: {pid}) exited with code 0; starting a new one"
            ))
        },
        Duration::from_secs(5),
    );
    server.wait_log_count(|l| l.contains(") ready"), 2, Duration::from_secs(10));
}

#[test]
fn usr1_and_winch_to_the_master_keep_it_serving() {
    let server = ServerBuilder::new("basic:app").start();
    server.signal(Signal::SIGUSR1);
    server.wait_log(
        |l| l.contains("Handling signal: usr1") && l.contains("reopening log files"),
        Duration::from_secs(5),
    );
    server.signal(Signal::SIGWINCH);
    server.wait_log(
        |l| l.contains("Handling signal: winch") && l.contains("ignored"),
        Duration::from_secs(5),
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn name_sets_the_process_titles_and_reuse_port_lets_another_bind() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--name", "shop", "--reuse-port"])
        .start();
    let cmdline = |pid: i32| {
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
            .trim_end_matches('\0')
            .to_string()
    };
    assert_eq!(cmdline(server.pid), "ferricorn: master [shop]");
    assert_eq!(
        cmdline(worker_pid(server.addr())),
        "ferricorn: worker [shop]"
    );
    // HUP still re-reads the real command line (it was read before the title).
    server.signal(Signal::SIGHUP);
    server.wait_log_count(|l| l.contains(") ready"), 2, Duration::from_secs(10));
    // SO_REUSEPORT: a second socket can bind the same address.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    other
        .bind(&server.addr().into())
        .expect("--reuse-port lets another socket bind the port");
}
