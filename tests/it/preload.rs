//! `--preload`: the master imports the app once, then forks workers that share it.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{http, ServerBuilder};

const T: Duration = Duration::from_secs(15);

#[test]
fn the_app_is_imported_once_in_the_master_and_workers_fork_from_it() {
    let server = ServerBuilder::new("preloaded:app")
        .workers(2)
        .args(&["--preload"])
        .start();
    let log = server.log();
    assert_eq!(log.matches("imported in").count(), 1, "{log}");
    assert!(
        log.contains(&format!("imported in {}", server.pid)),
        "imported in the master: {log}"
    );

    // Both workers answer with the object made at import; each has its own random
    // state (CPython's after-fork protocol ran), and its own pid.
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..200 {
        if seen.len() == 2 {
            break;
        }
        let text = http::get(server.addr(), "/").unwrap().text();
        let parts: Vec<String> = text.split(' ').map(str::to_string).collect();
        seen.entry(parts[0].clone()).or_insert(parts);
    }
    let rows: Vec<Vec<String>> = seen.into_values().collect();
    if rows.len() == 2 {
        assert_eq!(rows[0][1], rows[1][1], "the import-time value is shared");
    }

    // A killed worker is forked again from the preloaded master.
    let victim: i32 = rows[0][0].parse().unwrap();
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    server.wait_log(
        |l| l.contains(&format!("(pid: {victim}) was killed by SIGKILL")),
        T,
    );
    server.wait_log_count(|l| l.contains(") ready"), 3, T);
    // HUP re-forks too (the code is not re-imported in preload mode).
    server.signal(Signal::SIGHUP);
    server.wait_log_count(|l| l.contains(") ready"), 5, T);
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    assert_eq!(
        server.log().matches("imported in").count(),
        1,
        "{}",
        server.log()
    );
}

#[test]
fn an_app_that_fails_to_import_under_preload_stops_before_any_worker() {
    let mut server = ServerBuilder::new("broken_import:app")
        .args(&["--preload"])
        .spawn();
    assert_eq!(server.wait_exit(T).code(), Some(4), "{}", server.log());
    let log = server.log();
    assert!(
        log.contains("App failed to load: ModuleNotFoundError"),
        "{log}"
    );
    assert!(
        !log.contains("Booting worker") && !log.contains("Listening at"),
        "nothing bound or forked: {log}"
    );
}
