//! `-b unix:PATH`, `fd://N` and unix sockets from systemd: served as TCP is, the
//! socket file made safely and removed when the server stops for good.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{http, scratch, ServerBuilder};

const T: Duration = Duration::from_secs(15);

/// `raw` on a new connection to the socket at `path`; the whole answer.
fn exchange(path: &Path, raw: &str) -> String {
    let mut s = UnixStream::connect(path).expect("the unix socket listens");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn get(path: &Path, target: &str) -> String {
    exchange(
        path,
        &format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
}

fn unix_server(dir: &Path, extra: &[&str]) -> (crate::util::Server, PathBuf) {
    let path = dir.join("app.sock");
    let bind = format!("unix:{}", path.display());
    let server = ServerBuilder::new("basic:app")
        .no_default_bind()
        .args(&["-b", &bind])
        .args(extra)
        .start();
    (server, path)
}

#[test]
fn a_unix_socket_is_served_with_gunicorns_environ_and_removed_at_the_stop() {
    let dir = scratch("unix-serve");
    let (mut server, path) = unix_server(&dir, &["-m", "007", "--access-logfile", "-"]);
    assert!(
        server
            .log()
            .contains(&format!("Listening at: unix:{}", path.display())),
        "{}",
        server.log()
    );
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o770,
        "follows --umask 007"
    );

    let answer = get(&path, "/");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("Hello, World!\n"), "{answer}");
    // As gunicorn: no address for a unix peer, and without Host, the socket's
    // path as SERVER_NAME.
    let env = exchange(&path, "GET /env HTTP/1.0\r\n\r\n");
    assert!(env.contains("\"REMOTE_ADDR\": \"\""), "{env}");
    assert!(!env.contains("REMOTE_PORT"), "{env}");
    assert!(
        env.contains(&format!("\"SERVER_NAME\": \"{}\"", path.display())),
        "{env}"
    );
    assert!(env.contains("\"SERVER_PORT\": \"\""), "{env}");
    // A front proxy on the machine is trusted for the scheme, as gunicorn does.
    let env = exchange(
        &path,
        "GET /env HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    assert!(env.contains("\"wsgi.url_scheme\": \"https\""), "{env}");
    assert!(env.contains("\"SERVER_NAME\": \"app.example\""), "{env}");
    // Keep-alive works as on TCP.
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    }
    drop(s);
    server.wait_stdout(|l| l.starts_with("- - - ["), T);

    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(T).signal(), Some(15), "{}", server.log());
    assert!(!path.exists(), "the socket file is removed at the stop");
}

#[test]
fn tcp_and_unix_binds_mix_and_a_graceful_stop_answers_what_is_queued() {
    let dir = scratch("unix-mixed");
    let path = dir.join("app.sock");
    let bind = format!("unix:{}", path.display());
    let mut server = ServerBuilder::new("basic:app")
        .args(&["-b", &bind, "--worker-connections", "1"])
        .start();
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    assert!(get(&path, "/").starts_with("HTTP/1.1 200 OK"));

    // The one worker is busy; three requests wait in the unix socket's queue.
    let mut busy = UnixStream::connect(&path).unwrap();
    busy.write_all(b"GET /slow?1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    server.wait_log(|l| l.contains("slow request started"), T);
    let queued: Vec<UnixStream> = (0..3)
        .map(|_| {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    server.signal(Signal::SIGTERM);
    server.wait_log(|l| l.contains("Handling signal: term"), T);
    // A client that comes after the signal is refused at connect.
    let late = UnixStream::connect(&path);
    assert!(late.is_err(), "refused after the stop signal");
    for (i, mut s) in queued.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("queued request {i} was cut: {e}"));
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{i}: {text}");
    }
    let mut text = String::new();
    busy.read_to_string(&mut text).unwrap();
    assert!(text.ends_with("slow done\n"), "{text}");
    assert_eq!(server.wait_exit(T).signal(), Some(15), "{}", server.log());
    assert!(!path.exists());
}

#[test]
fn a_stale_socket_is_replaced_but_a_live_one_or_another_file_is_refused() {
    let dir = scratch("unix-refused");
    let path = dir.join("app.sock");
    let bind = format!("unix:{}", path.display());
    let refused = |bind: &str, why: &str| {
        let mut server = ServerBuilder::new("basic:app")
            .no_default_bind()
            .args(&["-b", bind])
            .spawn();
        let status = server.wait_exit(T);
        let log = server.log();
        assert_eq!(status.code(), Some(5), "{log}");
        assert!(
            log.contains(&format!("cannot bind `{bind}`: {why}")),
            "{log}"
        );
        assert!(!log.contains("Booting worker"), "{log}");
    };

    // Left by a crash: nobody listens there.
    drop(UnixListener::bind(&path).unwrap());
    let (mut server, _) = unix_server(&dir, &[]);
    assert!(get(&path, "/").starts_with("HTTP/1.1 200 OK"));
    // Now a live server is there: a second one is refused and leaves it be.
    refused(&bind, "a running server listens on it");
    assert!(get(&path, "/").starts_with("HTTP/1.1 200 OK"));
    server.signal(Signal::SIGTERM);
    server.wait_exit(T);

    let file = dir.join("data");
    std::fs::write(&file, "keep me").unwrap();
    refused(
        &format!("unix:{}", file.display()),
        "something that is not a socket is there; it is left as it is",
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    refused(
        &format!("unix:{}", dir.join("missing/app.sock").display()),
        "No such file or directory",
    );
    let long = format!("unix:/tmp/{}", "a".repeat(110));
    refused(
        &long,
        "the path is 115 bytes; a unix socket's holds at most 107",
    );
}

#[test]
fn a_hup_keeps_the_socket_and_a_usr2_upgrade_keeps_its_file() {
    let _exclusive = crate::util::exclusive();
    let dir = scratch("unix-upgrade");
    let (mut server, path) = unix_server(&dir, &[]);
    let ino = std::fs::metadata(&path).unwrap().ino();
    server.signal(Signal::SIGHUP);
    server.wait_log(|l| l.contains("Retiring worker"), T);
    assert!(get(&path, "/").starts_with("HTTP/1.1 200 OK"));
    server.signal(Signal::SIGUSR2);
    server.wait_log(|l| l.contains("Upgraded: adopted"), T);
    server.wait_log_count(|l| l.contains("Retiring worker"), 2, T);
    assert!(get(&path, "/").starts_with("HTTP/1.1 200 OK"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().ino(),
        ino,
        "the same socket file"
    );
    // The upgraded master made it no less: it removes it when it stops.
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(T).signal(), Some(15), "{}", server.log());
    assert!(!path.exists(), "{}", server.log());
}

#[test]
fn a_unix_socket_from_systemd_is_served_and_left_for_the_next_start() {
    let dir = scratch("unix-activated");
    let path = dir.join("web.sock");
    let socket = UnixListener::bind(&path).unwrap();
    let mut server = crate::activation::activated(socket.as_raw_fd()).start();
    assert!(get(&path, "/").starts_with("HTTP/1.1 200 OK"));
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(T).signal(), Some(15));
    assert!(path.exists(), "systemd's socket file stays");
    // A client that comes while nothing serves waits in systemd's queue.
    let mut waiting = UnixStream::connect(&path).unwrap();
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut next = crate::activation::activated(socket.as_raw_fd()).start();
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    waiting.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    next.signal(Signal::SIGTERM);
    next.wait_exit(T);
}

#[test]
fn fd_binds_serve_the_socket_a_parent_passed_beside_a_tcp_bind() {
    let dir = scratch("unix-fd");
    let path = dir.join("passed.sock");
    let socket = UnixListener::bind(&path).unwrap();
    let mut server = ServerBuilder::new("basic:app")
        .fd_3(socket.as_raw_fd())
        .args(&["-b", "fd://3"])
        .start();
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    assert!(get(&path, "/").starts_with("HTTP/1.1 200 OK"));
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(T).signal(), Some(15));
    assert!(path.exists(), "the parent's socket file stays");

    // An fd that is not a listening socket: one line, exit 5.
    let mut bad = ServerBuilder::new("basic:app")
        .no_default_bind()
        .args(&["-b", "fd://9"])
        .spawn();
    let status = bad.wait_exit(T);
    assert_eq!(status.code(), Some(5), "{}", bad.log());
    assert!(bad.log().contains("cannot bind `fd://9`"), "{}", bad.log());
}

#[test]
fn proxy_protocol_over_a_unix_socket_names_the_client() {
    let dir = scratch("unix-proxy");
    let (_server, path) = unix_server(&dir, &["--proxy-protocol", "--access-logfile", "-"]);
    let env = exchange(
        &path,
        "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET /env HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(env.contains("\"REMOTE_ADDR\": \"203.0.113.7\""), "{env}");
    assert!(env.contains("\"REMOTE_PORT\": \"51000\""), "{env}");
}

#[test]
fn under_user_the_socket_file_belongs_to_the_workers_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let dir = scratch("unix-user");
    let path = dir.join("app.sock");
    // The venv of Debian's python3 (scripts/test makes it) is one nobody can read.
    let venv = crate::util::repo_dir().join(".venv-system");
    assert!(venv.join("bin/ferricorn").exists(), "run ./scripts/test");
    let mut server = ServerBuilder::new("basic:app")
        .program(&venv.join("bin/ferricorn"))
        .no_default_bind()
        .args(&[
            "-b",
            &format!("unix:{}", path.display()),
            "--user",
            "nobody",
        ])
        .start();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.uid(), nobody.uid.as_raw(), "{}", server.log());
    assert!(get(&path, "/").starts_with("HTTP/1.1 200 OK"));
    server.signal(Signal::SIGTERM);
    server.wait_exit(T);
    assert!(!path.exists());
}
