//! The scoreboard is shared memory the workers (the app) write: what a worker
//! writes there must not make the master kill another worker, crash or misreport.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{http, ServerBuilder};

const T: Duration = Duration::from_secs(15);

#[test]
fn a_worker_scribbling_over_the_scoreboard_cannot_get_another_killed() {
    // --timeout 30: a busy timestamp of 1 ms after boot (what the scribbler
    // writes) is far over it, so a master that trusted the board would kill.
    let mut server = ServerBuilder::new("scribbler:app")
        .workers(2)
        .args(&["--timeout", "30"]);
    // As root, the workers run as another user (`-u`), as an app should: root
    // could reach the memfd through /proc whatever the mappings say. The venv of
    // Debian's python3 (scripts/test makes it) is one that user can read.
    let as_user = nix::unistd::geteuid().is_root();
    if as_user {
        let venv = crate::util::repo_dir().join(".venv-system");
        assert!(venv.join("bin/ferricorn").exists(), "run ./scripts/test");
        server = server
            .program(&venv.join("bin/ferricorn"))
            .args(&["--user", "nobody"]);
    }
    let server = server.start();
    let booted: Vec<i32> = server
        .log()
        .lines()
        .filter_map(|l| l.split("Booting worker with pid: ").nth(1))
        .map(|p| p.trim().parse().unwrap())
        .collect();
    assert_eq!(booted.len(), 2, "{}", server.log());

    let report = http::get(server.addr(), "/scribble").unwrap().text();
    let scribbler: i32 = report
        .split("\"pid\": ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    let other = *booted.iter().find(|p| **p != scribbler).unwrap();

    // The master checks timeouts every 250 ms: give it a few turns to (not) act.
    let timeout = server.try_wait_log(|l| l.contains("WORKER TIMEOUT"), Duration::from_secs(2));
    assert_eq!(timeout, None, "log:\n{}", server.log());
    assert!(kill(Pid::from_raw(other), None).is_ok(), "{}", server.log());
    for _ in 0..20 {
        assert_eq!(http::get(server.addr(), "/pid").unwrap().status, 200);
    }
    assert!(!server.log().contains("exited"), "{}", server.log());

    // Only its own slot was writable: no page of another slot or of the header,
    // neither by a store, nor through /proc/self/mem, mprotect or mremap.
    assert!(report.contains("\"written\": 1,"), "{report}");
    assert!(report.contains("\"mprotected\": 0,"), "{report}");
    assert!(!report.contains("grown"), "{report}");
    assert!(report.contains("\"fds\": 0"), "{report}");
    if as_user {
        assert!(report.contains("\"map_files\": 0"), "{report}");
    }

    server.signal(Signal::SIGTERM);
    let line = server.wait_log(|l| l.contains("Shutting down:"), T);
    assert!(
        line.contains(
            "0 of 0 requests in flight finished; 2 of 2 workers stopped in time, 0 killed"
        ),
        "{line}"
    );
}
