//! `--certfile`/`--keyfile`: TLS served by the workers on every TCP bind, checked
//! with curl and raw sockets against certificates made here with openssl.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{scratch, Server, ServerBuilder};

const T: Duration = Duration::from_secs(20);

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A CA and, signed by it, a certificate for localhost and 127.0.0.1 with a new
/// key of `kind` (`ec`, `rsa`, `ed25519`): (ca.pem, server.pem, server.key).
fn certificates(dir: &Path, kind: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    if !ca.exists() {
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=ferricorn test CA"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca));
    }
    let key = dir.join(format!("{kind}.key"));
    let csr = dir.join(format!("{kind}.csr"));
    let cert = dir.join(format!("{kind}.pem"));
    let mut req = Command::new("openssl");
    req.args(["req", "-newkey"]);
    match kind {
        "ec" => req.args(["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        "rsa" => req.args(["rsa:2048"]),
        other => req.arg(other),
    };
    run(req
        .args(["-nodes", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let ext = dir.join("san.ext");
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .args(["-CAcreateserial", "-extfile"])
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (ca, cert, key)
}

fn tls_server(cert: &Path, key: Option<&Path>, extra: &[&str]) -> Server {
    let mut b = ServerBuilder::new("basic:app")
        .arg("--certfile")
        .arg(cert.to_str().unwrap());
    if let Some(key) = key {
        b = b.arg("--keyfile").arg(key.to_str().unwrap());
    }
    b.args(extra).start()
}

/// curl over TLS to localhost (pinned to the server's address), trusting `ca`.
fn curl(server: &Server, ca: &Path) -> Command {
    let port = server.addr().port();
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "15", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"));
    c
}

fn url(server: &Server, path: &str) -> String {
    format!("https://localhost:{}{path}", server.addr().port())
}

#[test]
fn curl_gets_answers_over_tls_on_one_kept_alive_connection_with_the_https_scheme() {
    let dir = scratch("tls-serve");
    let (ca, cert, key) = certificates(&dir, "ec");
    let mut server = tls_server(&cert, Some(&key), &[]);
    assert!(
        server.log().contains("Listening at: https://127.0.0.1:"),
        "{}",
        server.log()
    );
    // Two requests on one connection: the second makes no new connection.
    let out = run(curl(&server, &ca)
        .args([
            "-w",
            "\\n%{http_code} %{num_connects} %{scheme} %{http_version}\\n",
        ])
        .arg(url(&server, "/"))
        .arg(url(&server, "/env")));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "Hello, World!", "{text}");
    assert_eq!(lines[1], "200 1 HTTPS 1.1", "{text}");
    assert!(lines[2].contains(r#""wsgi.url_scheme": "https""#), "{text}");
    assert_eq!(lines[3], "200 0 HTTPS 1.1", "kept alive: {text}");
    // A body larger than --body-buffer-size, received whole before the app runs.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let out = run(curl(&server, &ca)
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(url(&server, "/echo")));
    assert!(out.stdout == body, "echoed {} bytes", out.stdout.len());
    // 16 MiB, more than the socket holds, as bytes and through wsgi.file_wrapper
    // (no sendfile on TLS: the file is read and encrypted).
    let bytes = run(curl(&server, &ca).arg(url(&server, "/big"))).stdout;
    let file = run(curl(&server, &ca).arg(url(&server, "/big?file"))).stdout;
    assert_eq!(bytes.len(), 16 << 20);
    assert!(bytes == file, "file_wrapper over TLS sends the same bytes");
    server.signal(Signal::SIGTERM);
    server.wait_exit(T);
}

#[test]
fn a_key_inside_the_certfile_and_rsa_and_ed25519_keys_are_served() {
    let dir = scratch("tls-kinds");
    for kind in ["rsa", "ed25519"] {
        let (ca, cert, key) = certificates(&dir, kind);
        let both = dir.join(format!("{kind}-both.pem"));
        let mut pem = std::fs::read(&cert).unwrap();
        pem.extend(std::fs::read(&key).unwrap());
        std::fs::write(&both, pem).unwrap();
        let mut server = tls_server(&both, None, &[]);
        let out = run(curl(&server, &ca).arg(url(&server, "/")));
        assert_eq!(out.stdout, b"Hello, World!\n", "{kind}");
        server.signal(Signal::SIGTERM);
        server.wait_exit(T);
    }
}

#[test]
fn plain_http_on_the_tls_port_is_closed_at_once() {
    let dir = scratch("tls-plain");
    let (_, cert, key) = certificates(&dir, "ec");
    let server = tls_server(&cert, Some(&key), &[]);
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn a_client_that_never_starts_its_handshake_holds_no_worker_and_times_out() {
    let dir = scratch("tls-stall");
    let (ca, cert, key) = certificates(&dir, "ec");
    let server = tls_server(&cert, Some(&key), &["--header-timeout", "1"]);
    // One worker; this connection sends nothing at all (the kernel may hold it
    // back from the worker, with TCP_DEFER_ACCEPT), the next a partial hello.
    let silent = TcpStream::connect(server.addr()).unwrap();
    let mut partial = TcpStream::connect(server.addr()).unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let out = run(curl(&server, &ca).arg(url(&server, "/")));
    assert_eq!(out.stdout, b"Hello, World!\n");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The header timeout closes the stalled handshake.
    partial
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = partial.read_to_end(&mut got);
    drop(silent);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_missing_certfile_or_a_key_that_does_not_match_is_one_line_and_exit_1_before_binding() {
    let dir = scratch("tls-bad");
    let (_, cert, _) = certificates(&dir, "ec");
    let (_, _, other_key) = certificates(&dir, "rsa");
    let missing = dir.join("missing.pem");
    let cases: [(Vec<&str>, String); 3] = [
        (
            vec!["--certfile", missing.to_str().unwrap()],
            format!(
                "certfile {}: cannot read it: No such file or directory",
                missing.display()
            ),
        ),
        (
            vec![
                "--certfile",
                cert.to_str().unwrap(),
                "--keyfile",
                other_key.to_str().unwrap(),
            ],
            format!(
                "keyfile {}: the private key does not match the certificate in {}",
                other_key.display(),
                cert.display()
            ),
        ),
        (
            vec!["--certfile", cert.to_str().unwrap()],
            format!("certfile {}: no PEM private key in it", cert.display()),
        ),
    ];
    for (args, want) in cases {
        let mut server = ServerBuilder::new("basic:app").args(&args).spawn();
        assert_eq!(
            server.wait_exit(T).code(),
            Some(1),
            "{args:?}: {}",
            server.log()
        );
        let log = server.log();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains(&want), "{args:?}: {log}");
    }
}

#[test]
fn term_answers_a_tls_request_in_flight_and_the_server_dies_by_sigterm() {
    let dir = scratch("tls-term");
    let (ca, cert, key) = certificates(&dir, "ec");
    let mut server = tls_server(&cert, Some(&key), &[]);
    let client = curl(&server, &ca)
        .arg(url(&server, "/slow?1"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server.wait_log(|l| l.contains("slow request started"), T);
    server.signal(Signal::SIGTERM);
    let out = client.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "slow done\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = server.wait_exit(T);
    assert_eq!(Server::shell_status(status), 143, "{}", server.log());
}
