//! Configuration from a TOML file, `FERRICORN_*` variables and gunicorn's
//! `GUNICORN_CMD_ARGS`, with HUP re-reading it.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::scratch;
use crate::util::{apps_dir, http, ServerBuilder};

const T: Duration = Duration::from_secs(15);

#[test]
fn ferricorn_toml_in_the_start_directory_is_read() {
    let dir = scratch("toml-auto");
    std::fs::write(
        dir.join("ferricorn.toml"),
        format!(
            "wsgi_app = \"basic:app\"\nchdir = \"{}\"\nworkers = 2\nbind = [\"127.0.0.1:0\"]\n",
            apps_dir().display()
        ),
    )
    .unwrap();
    let server = ServerBuilder::new("")
        .no_chdir()
        .no_default_bind()
        .no_workers_flag()
        .workers(2)
        .cwd(&dir)
        .start_without_app();
    assert_eq!(
        server.log().matches("Booting worker").count(),
        2,
        "{}",
        server.log()
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn flags_beat_gunicorn_cmd_args_which_beat_ferricorn_vars_which_beat_the_file() {
    let dir = scratch("toml-precedence");
    let file = dir.join("settings.toml");
    std::fs::write(&file, "workers = 1\nmax_requests = 7\n").unwrap();
    let server = ServerBuilder::new("basic:app")
        .no_workers_flag()
        .args(&["-c", file.to_str().unwrap()])
        .env("FERRICORN_WORKERS", "2")
        .env("GUNICORN_CMD_ARGS", "--workers 3")
        .workers(3)
        .start();
    assert_eq!(
        server.log().matches("Booting worker").count(),
        3,
        "{}",
        server.log()
    );
}

#[test]
fn a_bad_config_file_is_one_line_naming_file_and_line_before_binding() {
    let dir = scratch("toml-bad");
    let file = dir.join("ferricorn.toml");
    std::fs::write(&file, "# production\nworkers = 2\ntimeout = \"soon\"\n").unwrap();
    let mut server = ServerBuilder::new("basic:app")
        .args(&["-c", file.to_str().unwrap()])
        .spawn();
    assert_eq!(server.wait_exit(T).code(), Some(1));
    let log = server.log();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains(&format!("for `timeout` (from {}:3)", file.display())),
        "{log}"
    );
}

#[test]
fn a_gunicorn_conf_py_is_read_as_gunicorn_reads_it() {
    let dir = scratch("gunicorn-conf");
    std::fs::write(
        dir.join("gunicorn.conf.py"),
        "import multiprocessing\n\nbind = '127.0.0.1:0'\nworkers = 1 + 1\naccesslog = '-'\nraw_env = ['FROM_CONF=yes']\nstatsd_host = 'localhost:8125'\nhelper = 'not a setting'\n\n\ndef post_fork(server, worker):\n    pass\n",
    )
    .unwrap();
    let server = ServerBuilder::new("basic:app")
        .no_default_bind()
        .no_workers_flag()
        .workers(2)
        .cwd(&dir)
        .start();
    let log = server.log();
    assert_eq!(log.matches("Booting worker").count(), 2, "{log}");
    // A setting ferricorn has (tests/it/statsd.rs), not ignored.
    assert!(!log.contains("statsd_host (from"), "{log}");
    assert_eq!(
        http::get(server.addr(), "/osenv?FROM_CONF").unwrap().text(),
        "yes"
    );
    server.wait_stdout(|l| l.contains("\"GET /osenv?FROM_CONF HTTP/1.1\" 200"), T);
}

#[test]
fn a_gunicorn_conf_py_that_raises_or_asks_for_another_worker_is_one_line() {
    let dir = scratch("gunicorn-conf-bad");
    for (text, want) in [
        ("workers = 2\nbind = undefined_name\n", "for `config` (from --config): it raised NameError: name 'undefined_name' is not defined (line 2)"),
        ("worker_class = 'gevent'\n", "invalid value `gevent` for `worker_class` (from "),
    ] {
        let file = dir.join("gunicorn.conf.py");
        std::fs::write(&file, text).unwrap();
        let mut server = ServerBuilder::new("basic:app").args(&["-c", file.to_str().unwrap()]).spawn();
        assert_eq!(server.wait_exit(T).code(), Some(1), "{}", server.log());
        let log = server.log();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains(want), "{log}");
    }
}

#[test]
fn hup_rereads_the_config_file_and_a_broken_one_keeps_the_old() {
    let dir = scratch("toml-reload");
    let file = dir.join("ferricorn.toml");
    std::fs::write(&file, "workers = 1\n").unwrap();
    let server = ServerBuilder::new("basic:app")
        .no_workers_flag()
        .args(&["-c", file.to_str().unwrap()])
        .start();

    std::fs::write(&file, "workers = 2\n").unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_log(|l| l.contains("reloading (new generation of 2 workers)"), T);
    server.wait_log_count(|l| l.contains(") ready"), 3, T);
    server.wait_log(|l| l.contains("Retiring worker 1"), T);

    std::fs::write(&file, "workers = \"lots\"\n").unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_log(
        |l| {
            l.contains("Reload failed: invalid value `lots` for `workers`")
                && l.contains("keeping the current configuration")
        },
        T,
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    assert!(
        !server.log().contains("reloading (new generation of 1"),
        "{}",
        server.log()
    );
}

#[test]
fn harmless_gunicorn_flags_are_accepted_with_a_warning_each() {
    let server = ServerBuilder::new("basic:app")
        .args(&[
            "--worker-tmp-dir",
            "/dev/shm",
            "-k",
            "sync",
            "--no-control-socket",
        ])
        .env("GUNICORN_CMD_ARGS", "--initgroups")
        .start();
    for flag in [
        "--worker-tmp-dir (from the command line) is ignored",
        "--initgroups (from GUNICORN_CMD_ARGS) is ignored",
    ] {
        assert!(
            server
                .log()
                .lines()
                .any(|l| l.contains("[WARNING]") && l.contains(flag)),
            "no warning for {flag}:\n{}",
            server.log()
        );
    }
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn gunicorn_flags_that_would_change_behaviour_are_refused_with_one_line() {
    for (args, want) in [
        (vec!["-k", "gevent"], "invalid value `gevent` for `worker-class` (from --worker-class): ferricorn has sync and gthread workers"),
        (vec!["--daemon"], "for `daemon` (from --daemon): ferricorn stays in the foreground"),
        (vec!["--ca-certs", "ca.pem"], "for `ca-certs` (from --ca-certs): client certificates are not supported yet"),
    ] {
        let mut server = ServerBuilder::new("basic:app").args(&args).spawn();
        assert_eq!(server.wait_exit(T).code(), Some(1), "{args:?}: {}", server.log());
        let log = server.log();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains(want), "{args:?}: {log}");
    }
}

#[test]
fn env_flag_sets_variables_for_the_app() {
    let server = ServerBuilder::new("basic:app")
        .args(&["-e", "GREETING=hi there", "--env", "EMPTY="])
        .start();
    assert_eq!(
        http::get(server.addr(), "/osenv?GREETING").unwrap().text(),
        "hi there"
    );
    assert_eq!(http::get(server.addr(), "/osenv?EMPTY").unwrap().text(), "");
}

#[test]
fn request_limits_follow_gunicorns_flags() {
    let server = ServerBuilder::new("basic:app")
        .args(&[
            "--limit-request-line",
            "100",
            "--limit-request-fields",
            "3",
            "--limit-request-field_size",
            "50",
        ])
        .start();
    let mut c = http::Client::connect(server.addr()).unwrap();
    c.send(format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(120)).as_bytes())
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 414);
    let mut c = http::Client::connect(server.addr()).unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 431);
    let mut c = http::Client::connect(server.addr()).unwrap();
    c.send(format!("GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n", "v".repeat(60)).as_bytes())
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 431);
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn access_log_to_stdout_in_gunicorns_default_format() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--access-logfile", "-"])
        .start();
    let mut c = http::Client::connect(server.addr()).unwrap();
    c.send(b"GET /echo?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: probe/1.0\r\nReferer: http://ref/\r\nContent-Length: 3\r\n\r\nabc").unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 200);
    let line = server.wait_stdout(|l| l.contains("GET /echo?x=1"), T);
    // 127.0.0.1 - - [26/Nov/2026:13:10:25 +0000] "GET /echo?x=1 HTTP/1.1" 200 3 "http://ref/" "probe/1.0"
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with("] \"GET /echo?x=1 HTTP/1.1\" 200 3 \"http://ref/\" \"probe/1.0\""),
        "{line}"
    );
    // No access log unless asked: the error log has none of it.
    assert!(
        !server.log().contains("GET /echo?x=1 HTTP/1.1\" 200"),
        "{}",
        server.log()
    );
}

#[test]
fn a_client_cannot_forge_access_log_lines_nor_read_the_process_environment() {
    // The Basic user name (%(u)s, in the default format) carries a newline, a
    // quote and an escape sequence; %({VAR}e)s names a variable of the process.
    let server = ServerBuilder::new("basic:app")
        .args(&[
            "--access-logfile",
            "-",
            "--access-logformat",
            "%(u)s \"%(r)s\" %({FERRICORN_TEST_TOKEN}e)s %({HTTP_X_ID}e)s",
        ])
        .env("FERRICORN_TEST_TOKEN", "s3cret")
        .start();
    let mut c = http::Client::connect(server.addr()).unwrap();
    // base64 of `eve\n127.0.0.1 - admin "GET /admin\x1b[2J:pw`
    c.send(b"GET /?forge HTTP/1.1\r\nHost: t\r\nX-Id: id7\r\nAuthorization: Basic ZXZlCjEyNy4wLjAuMSAtIGFkbWluICJHRVQgL2FkbWluG1sySjpwdw==\r\n\r\n").unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 200);
    let line = server.wait_stdout(|l| l.contains("/?forge"), T);
    assert_eq!(
        line,
        "eve\\x0A127.0.0.1 - admin \\x22GET /admin\\x1B[2J \"GET /?forge HTTP/1.1\" - id7"
    );
    assert_eq!(server.stdout().lines().count(), 1, "{}", server.stdout());
}

#[test]
fn access_log_file_custom_format_and_usr1_reopen() {
    let dir = scratch("access-log");
    let path = dir.join("access.log");
    let server = ServerBuilder::new("basic:app")
        .args(&[
            "--access-logfile",
            path.to_str().unwrap(),
            "--access-logformat",
            "%(m)s %(U)s %(s)s %(b)s %({x-req}i)s %({content-type}o)s",
        ])
        .start();
    let mut c = http::Client::connect(server.addr()).unwrap();
    c.send(b"GET /nope HTTP/1.1\r\nHost: t\r\nX-Req: r1\r\n\r\n")
        .unwrap();
    c.read_response(false).unwrap();
    let wait_for = |p: &Path, want: &str| {
        let deadline = std::time::Instant::now() + T;
        loop {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            if text.contains(want) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{want:?} not in {}: {text:?}",
                p.display()
            );
            std::thread::sleep(Duration::from_millis(20)); // polling a file, bounded
        }
    };
    wait_for(&path, "GET /nope 404 10 r1 text/plain\n");

    // logrotate: move the file away, then USR1; new lines go to a new file.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    server.signal(Signal::SIGUSR1);
    server.wait_log(|l| l.contains("reopening log files"), T);
    // The worker reopens when it gets the forwarded USR1; retry until a line lands in the new file.
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(&path)
        .unwrap_or_default()
        .contains("GET /after")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no line in the reopened file"
        );
        http::get(server.addr(), "/after").unwrap();
    }
    assert!(
        std::fs::read_to_string(&rotated)
            .unwrap()
            .starts_with("GET /nope 404 10 r1 text/plain\n"),
        "the old lines stay in the rotated file"
    );
}

#[test]
fn error_log_file_gets_the_log_and_app_tracebacks() {
    let dir = scratch("error-log");
    let path = dir.join("error.log");
    let server = ServerBuilder::new("basic:app")
        .args(&["--error-logfile", path.to_str().unwrap()])
        .start_with_log_file(&path);
    let addr = server.addr();
    assert_eq!(http::get(addr, "/error").unwrap().status, 500);
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(&path)
        .unwrap()
        .contains("RuntimeError: boom from the test app")
    {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20)); // polling a file, bounded
    }
    assert!(
        server.log().is_empty(),
        "nothing on stderr: {}",
        server.log()
    );
}

#[test]
fn docs_configuration_md_lists_every_setting() {
    let doc =
        std::fs::read_to_string(crate::util::repo_dir().join("docs/configuration.md")).unwrap();
    let out = std::process::Command::new(crate::util::bin())
        .args([
            "--print-config",
            "--chdir",
            apps_dir().to_str().unwrap(),
            "basic:app",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.split(" = ").next())
        .collect();
    assert!(names.len() > 20, "{printed}");
    for name in names {
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "docs/configuration.md does not list `{name}`"
        );
        assert!(
            doc.contains(&format!("FERRICORN_{}", name.to_ascii_uppercase())),
            "docs/configuration.md does not name FERRICORN_{}",
            name.to_ascii_uppercase()
        );
    }
}

#[test]
fn print_config_names_each_source_and_check_config_imports_the_app() {
    let dir = scratch("print-config");
    let file = dir.join("ferricorn.toml");
    std::fs::write(&file, "# app settings\ntimeout = 12\n").unwrap();
    let out = std::process::Command::new(crate::util::bin())
        .args([
            "--print-config",
            "-c",
            file.to_str().unwrap(),
            "--chdir",
            apps_dir().to_str().unwrap(),
            "-w",
            "2",
            "basic:app",
        ])
        .env("FERRICORN_BACKLOG", "64")
        .env_remove("PORT")
        .env_remove("WEB_CONCURRENCY")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("timeout = 12  # {}:2", file.display())),
        "{text}"
    );
    assert!(
        text.contains("backlog = 64  # environment variable FERRICORN_BACKLOG"),
        "{text}"
    );
    assert!(text.contains("workers = \"2\"  # --workers"), "{text}");
    assert!(text.contains("graceful_timeout = 25  # default"), "{text}");

    let check = |app: &str| {
        std::process::Command::new(crate::util::bin())
            .args([
                "--check-config",
                "--chdir",
                apps_dir().to_str().unwrap(),
                app,
            ])
            .output()
            .unwrap()
    };
    assert_eq!(check("basic:app").status.code(), Some(0));
    let bad = check("broken_import:app");
    assert_eq!(bad.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("App failed to load: ModuleNotFoundError")
    );
}

#[test]
fn gunicorn_conf_py_server_hooks_run_at_their_moments() {
    let dir = scratch("gunicorn-hooks");
    let marks = dir.join("marks.txt");
    std::fs::write(
        dir.join("gunicorn.conf.py"),
        format!(
            r#"import os
MARKS = {marks:?}
bind = "127.0.0.1:0"

def mark(text):
    with open(MARKS, "a") as f:
        f.write(text + "\n")

def on_starting(server):
    mark(f"on_starting master={{server.pid}}")

def when_ready(server):
    mark("when_ready")

def post_fork(server, worker):
    mark(f"post_fork worker={{worker.pid}} master={{server.pid}}")

def post_worker_init(worker):
    mark("post_worker_init")

def pre_request(worker, req):
    mark(f"pre_request {{req.method}} {{req.path}} {{dict(req.headers).get('X-TRACE')}}")

def post_request(worker, req, environ, resp):
    mark(f"post_request {{req.path}} {{resp.status_code}} {{environ['PATH_INFO']}}")

def worker_exit(server, worker):
    mark("worker_exit")

def on_exit(server):
    mark("on_exit")

def worker_int(worker):
    pass
"#
        ),
    )
    .unwrap();
    let mut server = ServerBuilder::new("basic:app")
        .no_default_bind()
        .cwd(&dir)
        .start();
    let mut c = http::Client::connect(server.addr()).unwrap();
    c.send(b"GET /pid HTTP/1.1\r\nHost: t\r\nX-Trace: abc\r\n\r\n")
        .unwrap();
    let worker_pid = c.read_response(false).unwrap().text();
    server.signal(Signal::SIGTERM);
    server.wait_exit(T);
    let text = std::fs::read_to_string(&marks).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let master = server.pid;
    assert_eq!(
        lines,
        vec![
            format!("on_starting master={master}").as_str(),
            "when_ready",
            format!("post_fork worker={worker_pid} master={master}").as_str(),
            "post_worker_init",
            "pre_request GET /pid abc",
            "post_request /pid 200 /pid",
            "worker_exit",
            "on_exit",
        ],
        "log:\n{}",
        server.log()
    );
    assert!(
        server
            .log()
            .contains("server hook `worker_int` in gunicorn.conf.py is not run"),
        "{}",
        server.log()
    );
}

/// Write `dir`/gunicorn.conf.py: any port, `workers`, a `mark(text)` that appends a
/// line to the returned file, then `hooks`.
fn write_hooks_conf(dir: &Path, workers: u32, hooks: &str) -> std::path::PathBuf {
    let marks = dir.join("marks.txt");
    let head = format!(
        "MARKS = {marks:?}\nbind = \"127.0.0.1:0\"\nworkers = {workers}\n\n\
         def mark(text):\n    with open(MARKS, \"a\") as f:\n        f.write(text + \"\\n\")\n\n"
    );
    std::fs::write(dir.join("gunicorn.conf.py"), head + hooks).unwrap();
    marks
}

#[test]
fn on_reload_runs_on_hup_before_the_configuration_is_read_again() {
    let dir = scratch("hooks-reload");
    let on_reload = "def on_reload(server):\n    mark(f\"on_reload master={server.pid} workers={server.num_workers}\")\n";
    let marks = write_hooks_conf(&dir, 1, on_reload);
    let server = ServerBuilder::new("basic:app")
        .no_default_bind()
        .no_workers_flag()
        .cwd(&dir)
        .start();
    assert!(!server.log().contains("`on_reload`"), "{}", server.log());
    write_hooks_conf(&dir, 2, on_reload);
    server.signal(Signal::SIGHUP);
    server.wait_log(|l| l.contains("reloading (new generation of 2 workers)"), T);
    // Run before the file was read again: it saw the configuration then in force.
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap_or_default(),
        format!("on_reload master={} workers=1\n", server.pid),
        "{}",
        server.log()
    );
}

#[test]
fn nworkers_changed_child_exit_and_pre_exec_run_at_the_masters_moments() {
    let _exclusive = crate::util::exclusive();
    let dir = scratch("hooks-master-events");
    let marks = write_hooks_conf(
        &dir,
        1,
        r#"def nworkers_changed(server, new_value, old_value):
    mark(f"nworkers_changed {new_value} {old_value} num_workers={server.num_workers}")

def child_exit(server, worker):
    mark(f"child_exit pid={worker.pid} age={worker.age} master={server.pid}")

def pre_exec(server):
    mark(f"pre_exec master={server.pid}")
"#,
    );
    let server = ServerBuilder::new("basic:app")
        .no_default_bind()
        .no_workers_flag()
        .cwd(&dir)
        .start();
    let marked = |text: &str| {
        let deadline = std::time::Instant::now() + T;
        loop {
            let all = std::fs::read_to_string(&marks).unwrap_or_default();
            if all.lines().any(|l| l == text) || std::time::Instant::now() > deadline {
                return all;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let master = server.pid;
    let first = crate::util::worker_pid(server.addr());
    assert!(
        marked("nworkers_changed 1 None num_workers=1").starts_with("nworkers_changed 1 None"),
        "{}",
        server.log()
    );

    server.signal(Signal::SIGTTIN);
    let all = marked("nworkers_changed 2 1 num_workers=2");
    assert!(
        all.contains("nworkers_changed 2 1 num_workers=2\n"),
        "{all}"
    );

    // A worker ends (SIGTERM from outside): the master reaps it and runs child_exit.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), Signal::SIGTERM).unwrap();
    let want = format!("child_exit pid={first} age=1 master={master}");
    let all = marked(&want);
    assert!(all.lines().any(|l| l == want), "{all}\n{}", server.log());

    server.signal(Signal::SIGUSR2);
    server.wait_log(|l| l.contains("Upgraded: adopted"), T);
    let want = format!("pre_exec master={master}");
    let all = marked(&want);
    assert!(all.lines().any(|l| l == want), "{all}");
    assert!(!server.log().contains("is not run"), "{}", server.log());
}

#[test]
fn post_request_runs_when_a_paused_response_ends_whole_or_cut() {
    let dir = scratch("hooks-paused");
    let marks = write_hooks_conf(
        &dir,
        1,
        "def post_request(worker, req, environ, resp):\n    mark(f\"post_request {req.path} {resp.status_code}\")\n",
    );
    let server = ServerBuilder::new("basic:app")
        .no_default_bind()
        .no_workers_flag()
        .cwd(&dir)
        .start();
    let marked = || std::fs::read_to_string(&marks).unwrap_or_default();
    // A client slow to read 16 MiB: the response pauses, and the hook waits for its end.
    let mut slow = http::Client::connect(server.addr()).unwrap();
    slow.send(b"GET /big?chunked HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the socket fills
    assert_eq!(marked(), "", "post_request before the body went out");
    assert_eq!(slow.read_response(false).unwrap().body.len(), 16 << 20);
    server.wait_log(
        |l| l.contains("big generator closed after the last piece"),
        T,
    );
    assert_eq!(marked(), "post_request /big 200\n");
    // A client that leaves mid-body: the hook still runs, once.
    let mut gone = std::net::TcpStream::connect(server.addr()).unwrap();
    std::io::Write::write_all(&mut gone, b"GET /big?chunked HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(gone);
    server.wait_log(|l| l.contains("big generator closed early"), T);
    // The hook runs right after close() (bounded wait for its line).
    let deadline = std::time::Instant::now() + T;
    while marked().lines().count() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(marked(), "post_request /big 200\npost_request /big 200\n");
}

#[test]
fn forwarded_allow_ips_decides_whose_x_forwarded_proto_sets_the_scheme() {
    let scheme = |server: &crate::util::Server, headers: &str| -> (u16, String) {
        let mut c = http::Client::connect(server.addr()).unwrap();
        c.send(format!("GET /env HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes())
            .unwrap();
        let resp = c.read_response(false).unwrap();
        let text = resp.text();
        let scheme = text
            .split("\"wsgi.url_scheme\": \"")
            .nth(1)
            .map(|s| s.split('"').next().unwrap().to_string())
            .unwrap_or_default();
        (resp.status, scheme)
    };
    // Default (as gunicorn): the local host is trusted.
    let server = ServerBuilder::new("basic:app").start();
    assert_eq!(
        scheme(&server, "X-Forwarded-Proto: https\r\n"),
        (200, "https".into())
    );
    assert_eq!(scheme(&server, ""), (200, "http".into()));
    assert_eq!(
        scheme(&server, "X-Forwarded-Ssl: on\r\n"),
        (200, "https".into())
    );
    // Two headers that disagree: 400, as gunicorn.
    assert_eq!(
        scheme(
            &server,
            "X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n"
        )
        .0,
        400
    );

    // Not from a trusted peer: the header is ignored.
    let server = ServerBuilder::new("basic:app")
        .args(&["--forwarded-allow-ips", "10.0.0.0/8"])
        .start();
    assert_eq!(
        scheme(&server, "X-Forwarded-Proto: https\r\n"),
        (200, "http".into())
    );
    // Heroku's buildpack sets FORWARDED_ALLOW_IPS='*'.
    let server = ServerBuilder::new("basic:app")
        .env("FORWARDED_ALLOW_IPS", "*")
        .start();
    assert_eq!(
        scheme(&server, "X-Forwarded-Proto: https\r\n"),
        (200, "https".into())
    );

    let mut bad = ServerBuilder::new("basic:app")
        .env("FORWARDED_ALLOW_IPS", "10.0.0.1/8")
        .spawn();
    assert_eq!(bad.wait_exit(T).code(), Some(1));
    assert!(bad.log().contains("invalid value `10.0.0.1/8` for `forwarded_allow_ips` (from environment variable FORWARDED_ALLOW_IPS): `10.0.0.1/8` has host bits set"), "{}", bad.log());
}

#[test]
fn reload_restarts_workers_on_change_and_serves_a_load_error_until_fixed() {
    let dir = scratch("reload-dev");
    let module = dir.join("devapp.py");
    let write = |body: &str| {
        std::fs::write(&module, body).unwrap();
        // Make sure the modification time moves even on a coarse clock.
        let later = std::time::SystemTime::now() + Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&module)
            .unwrap()
            .set_modified(later)
            .unwrap();
    };
    let app = |v: &str| format!("def app(e, sr):\n    sr('200 OK', [])\n    return [b'{v}']\n");
    write(&app("v1"));
    let server = ServerBuilder::new("devapp:app")
        .chdir(&dir)
        .args(&["--reload"])
        .start();
    assert_eq!(http::get(server.addr(), "/").unwrap().text(), "v1");
    let until = |want: &str| {
        let deadline = std::time::Instant::now() + T;
        loop {
            let resp = http::get(server.addr(), "/").unwrap();
            if resp.text().contains(want) {
                return resp;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never saw {want:?}; log:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50)); // polling for the restart, bounded
        }
    };

    write(&app("v2"));
    until("v2");
    assert!(
        server.log().contains("Worker reloading:") && server.log().contains("devapp.py modified"),
        "{}",
        server.log()
    );

    // A broken edit does not stop the server: the error is served until it is fixed.
    write("def app(e, sr)\n    oops\n");
    let resp = until("App failed to load");
    assert_eq!(resp.status, 500);
    assert!(resp.text().contains("SyntaxError"), "{}", resp.text());
    write(&app("v3"));
    until("v3");
}

#[test]
fn capture_output_sends_the_apps_stdout_to_the_error_log() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--capture-output"])
        .start();
    assert_eq!(http::get(server.addr(), "/say").unwrap().text(), "said");
    server.wait_log(|l| l == "printed by the app", T);
    let plain = ServerBuilder::new("basic:app").start();
    assert_eq!(http::get(plain.addr(), "/say").unwrap().text(), "said");
    plain.wait_stdout(|l| l == "printed by the app", T);
}
