//! The Procfile drop-in: honcho (a Foreman clone, as Heroku runs Procfiles) starts
//! ferricorn on a small Flask app with PORT and WEB_CONCURRENCY, and stops it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{bin, http, scratch, spawn_command, Server};

const T: Duration = Duration::from_secs(20);

use crate::util::test_venv as venv;

fn require(tool: &Path) {
    assert!(
        tool.exists(),
        "{} is missing: run ./scripts/test, which installs tests/requirements.txt into .venv",
        tool.display()
    );
}

fn flask_app(name: &str, procfile_line: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("app.py"),
        "import os\nfrom flask import Flask\n\n\ndef create_app():\n    app = Flask(__name__)\n\n    @app.get('/')\n    def index():\n        return {'hello': 'flask', 'pid': os.getpid()}\n\n    return app\n",
    )
    .unwrap();
    std::fs::write(dir.join("Procfile"), format!("{procfile_line}\n")).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run `honcho start` in `dir` with PORT and WEB_CONCURRENCY set.
fn honcho(dir: &Path, port: u16, extra_env: &[(&str, &str)]) -> Server {
    let venv = venv();
    require(&venv.join("bin/honcho"));
    let mut cmd = Command::new(venv.join("bin/honcho"));
    cmd.args(["start", "--port", &port.to_string()])
        .current_dir(dir)
        .env("WEB_CONCURRENCY", "2")
        .env("VIRTUAL_ENV", &venv)
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", venv.join("bin").display()),
        )
        .env_remove("GUNICORN_CMD_ARGS")
        .envs(extra_env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    spawn_command(cmd, 2)
}

fn wait_serving(port: u16, server: &Server) -> String {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + T;
    loop {
        if let Ok(resp) = http::get(addr, "/") {
            assert_eq!(resp.status, 200);
            return resp.text();
        }
        assert!(
            Instant::now() < deadline,
            "not serving on {port}:\n{}\n{}",
            server.stdout(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50)); // polling a port, bounded
    }
}

#[test]
fn the_heroku_pages_procfile_serves_flask_and_a_dyno_stop_reads_143() {
    // docs/heroku.md's Procfile, as written: `ferricorn` found on PATH (the venv's
    // bin, as the buildpack's PATH has it).
    let procfile = crate::deploy_docs::doc_block("docs/heroku.md", "Procfile");
    let dir = crate::deploy_docs::flask_app_dir("procfile");
    std::fs::write(dir.join("Procfile"), &procfile).unwrap();
    let port = free_port();
    let mut server = honcho(&dir, port, &[]);
    assert_eq!(wait_serving(port, &server), "deployed");
    server.wait_stdout(
        |l| l.contains(&format!("Listening at: http://0.0.0.0:{port}")),
        T,
    );
    // WEB_CONCURRENCY=2: two workers, both serving.
    let ready = server.wait_stdout(|l| l.contains("Worker 2 (pid:") && l.contains(") ready"), T);
    assert!(!ready.is_empty());
    assert!(
        !server.stdout().contains("Worker 3 "),
        "{}",
        server.stdout()
    );

    // The dyno manager: SIGTERM to every process of the dyno, during a request.
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let request = std::thread::spawn(move || http::get(addr, "/slow").map(|r| r.text()));
    std::thread::sleep(Duration::from_millis(300)); // inside the app's 1 s sleep
    server.signal_group(Signal::SIGTERM);
    assert_eq!(request.join().unwrap().unwrap(), "slow answered");
    server.wait_exit(T);
    let out = server.stdout();
    assert!(
        out.contains("Shutting down: graceful stop after SIGTERM")
            && out.contains("1 of 1 requests in flight finished")
            && out.contains("exiting with SIGTERM (status 143)"),
        "{out}"
    );
}

#[test]
fn the_heroku_pages_requirements_resolve_ferricorn_offline_from_wheels() {
    let dir = scratch("heroku-requirements");
    std::fs::create_dir_all(dir.join("wheels")).unwrap();
    let wheel = crate::deploy_docs::built_wheel();
    std::fs::copy(&wheel, dir.join("wheels").join(wheel.file_name().unwrap())).unwrap();
    // The page's lines that concern ferricorn (the app's own come from the index).
    let requirements: String = crate::deploy_docs::doc_block("docs/heroku.md", "requirements")
        .lines()
        .filter(|l| l.starts_with("--find-links") || l.trim() == "ferricorn")
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(requirements.lines().count(), 2, "{requirements}");
    std::fs::write(dir.join("requirements.txt"), requirements).unwrap();
    let out = Command::new(venv().join("bin/python"))
        .args([
            "-m",
            "pip",
            "download",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(["-r", "requirements.txt", "-d", "got"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("got").join(wheel.file_name().unwrap()).exists());
}

#[test]
fn a_gunicorn_procfile_line_with_gunicorn_cmd_args_gets_access_logs_on_stdout() {
    // As Heroku's Python buildpack sets it.
    let dir = flask_app(
        "procfile-gunicorn",
        &format!("web: {} \"app:create_app()\"", bin()),
    );
    let port = free_port();
    let mut server = honcho(&dir, port, &[("GUNICORN_CMD_ARGS", "--access-logfile -")]);
    wait_serving(port, &server);
    let line = server.wait_stdout(|l| l.contains("\"GET / HTTP/1.1\" 200"), T);
    assert!(line.contains("127.0.0.1 - - ["), "{line}");
    server.signal(Signal::SIGTERM);
    server.wait_exit(T);
}
