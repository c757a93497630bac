//! App specs as gunicorn reads them, and failures that must stop the server
//! with one clear line and gunicorn's exit code 4 — never a respawn loop.

use std::time::Duration;

use crate::util::http;
use crate::util::ServerBuilder;

#[test]
fn app_spec_forms() {
    let cases = [
        ("factory:create_app()", "factory"),
        ("factory:create_app('hi', 2)", "hihi"),
        ("factory:create_app(greeting='kw', times=3)", "kwkwkw"),
        ("factory", "module default"),
        ("factory:application", "module default"),
    ];
    for (spec, body) in cases {
        let server = ServerBuilder::new(spec).start();
        assert_eq!(
            http::get(server.addr(), "/").unwrap().text(),
            body,
            "{spec}"
        );
    }
}

/// Start a server whose app cannot load; return (exit code, stderr).
fn failing(spec: &str, workers: usize) -> (Option<i32>, String) {
    let mut server = ServerBuilder::new(spec).workers(workers).spawn();
    let status = server.wait_exit(Duration::from_secs(20));
    (status.code(), server.log())
}

fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("[ERROR]")).collect()
}

#[test]
fn import_error_stops_with_one_clear_line_and_exit_code_4() {
    let (code, log) = failing("broken_import:app", 2);
    assert_eq!(code, Some(4), "log:\n{log}");
    let errors = error_lines(&log);
    assert_eq!(
        errors.len(),
        1,
        "one line, however many workers fail:\n{log}"
    );
    assert!(errors[0].contains("App failed to load: ModuleNotFoundError: No module named 'a_module_that_does_not_exist'"), "{}", errors[0]);
    assert!(
        errors[0].contains("broken_import.py:3"),
        "says where: {}",
        errors[0]
    );
    assert!(
        !log.contains("Traceback"),
        "the traceback is for --log-level debug:\n{log}"
    );
    assert!(
        log.matches("Booting worker").count() <= 2,
        "no respawn loop:\n{log}"
    );
}

#[test]
fn missing_module_not_callable_and_bad_specs_exit_4() {
    let cases = [
        ("no_such_module:app", "No module named 'no_such_module'"),
        (
            "factory:missing",
            "module 'factory' has no attribute 'missing'",
        ),
        ("factory:not_callable", "is not callable"),
        (
            "factory:create_app(open('/etc/passwd'))",
            "must be literals",
        ),
        ("factory:create_app(", "cannot read"),
    ];
    for (spec, want) in cases {
        let (code, log) = failing(spec, 1);
        assert_eq!(code, Some(4), "{spec}: log:\n{log}");
        let errors = error_lines(&log);
        assert_eq!(errors.len(), 1, "{spec}:\n{log}");
        assert!(errors[0].contains(want), "{spec}: {}", errors[0]);
    }
}

#[test]
fn debug_log_level_shows_the_traceback() {
    let mut server = ServerBuilder::new("broken_import:app")
        .args(&["--log-level", "debug"])
        .spawn();
    assert_eq!(server.wait_exit(Duration::from_secs(20)).code(), Some(4));
    assert!(
        server.log().contains("Traceback (most recent call last)"),
        "{}",
        server.log()
    );
}

#[test]
fn config_errors_are_one_line_and_exit_1_before_binding() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        (&[("WEB_CONCURRENCY", "abc")], &[], "invalid value `abc` for `workers` (from environment variable WEB_CONCURRENCY): expected a positive integer"),
        (&[], &["-w", "0"], "invalid value `0` for `workers` (from --workers)"),
        (&[], &["--term-exit", "300"], "invalid value `300` for `term_exit` (from --term-exit): expected `signal` or an exit code from 0 to 255"),
        (&[("FERRICORN_TIMEOUT", "soon")], &[], "invalid value `string \"soon\"` for `timeout` (from environment variable FERRICORN_TIMEOUT)"),
        (&[], &["--timeout", "soon"], ""),
        (&[("PORT", "http")], &[], "invalid value `http` for `bind` (from environment variable PORT)"),
    ];
    for (env, args, want) in cases {
        let mut b = ServerBuilder::new("basic:app").args(args).no_workers_flag();
        if env.iter().any(|(k, _)| *k == "PORT") {
            b = b.no_default_bind();
        }
        for (k, v) in env.iter() {
            b = b.env(k, v);
        }
        let mut server = b.spawn();
        let status = server.wait_exit(Duration::from_secs(10));
        let log = server.log();
        if want.is_empty() {
            // A malformed command line (here a non-number for a number flag) is a
            // usage error (2), as argparse makes it in gunicorn; a well-formed value
            // that is out of range is a config error (1), as in gunicorn.
            assert_eq!(status.code(), Some(2), "{args:?}: {log}");
            assert!(log.contains("--timeout"), "{log}");
            continue;
        }
        assert_eq!(status.code(), Some(1), "{env:?} {args:?}: {log}");
        assert_eq!(log.lines().count(), 1, "one line: {log}");
        assert!(log.contains(want), "{log}");
        assert!(!log.contains("Listening"), "nothing was bound: {log}");
    }
}

#[test]
fn port_and_web_concurrency_are_honoured() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let server = ServerBuilder::new("basic:app")
        .no_default_bind()
        .no_workers_flag()
        .env("PORT", &port.to_string())
        .env("WEB_CONCURRENCY", "2")
        .workers(2)
        .start();
    assert!(
        server
            .log()
            .contains(&format!("Listening at: http://0.0.0.0:{port}")),
        "{}",
        server.log()
    );
    assert_eq!(server.log().matches("Booting worker with pid").count(), 2);
    assert_eq!(
        http::get(format!("127.0.0.1:{port}").parse().unwrap(), "/")
            .unwrap()
            .status,
        200
    );
}

#[test]
fn bind_failure_exits_5_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut server = ServerBuilder::new("basic:app")
        .no_default_bind()
        .args(&["-b", &addr])
        .spawn();
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)).code(),
        Some(5),
        "{}",
        server.log()
    );
    assert!(
        server.log().contains(&format!("cannot bind {addr}")),
        "{}",
        server.log()
    );
}
