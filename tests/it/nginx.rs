//! nginx in front, as docs/nginx.md sets it up: Debian's nginx proxying to
//! ferricorn over a unix socket and over TCP. nginx runs from a config and pid
//! file of its own in a scratch directory, on a free loopback port, and is
//! stopped by pid.

use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::load::Load;
use crate::util::{http, scratch, Server, ServerBuilder};

const T: Duration = Duration::from_secs(15);

struct Nginx {
    child: Child,
    addr: std::net::SocketAddr,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

/// nginx proxying `/unix/` to the socket at `sock` and `/tcp/` to `tcp`, with the
/// headers docs/nginx.md sets.
fn start_nginx(dir: &Path, sock: &Path, tcp: std::net::SocketAddr) -> Nginx {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let user = if nix::unistd::geteuid().is_root() {
        "user root root;"
    } else {
        ""
    };
    let d = dir.display();
    let conf = format!(
        r#"{user}
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream app_unix {{ server unix:{sock}; keepalive 8; }}
    upstream app_tcp {{ server {tcp}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 10m;
        {loc_unix}
        {loc_tcp}
    }}
}}
"#,
        sock = sock.display(),
        loc_unix = location("unix", "app_unix"),
        loc_tcp = location("tcp", "app_tcp"),
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx_binary())
        .args(["-p", &d.to_string(), "-c"])
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx runs (scripts/test installs Debian's nginx)");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + T;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx {
        child,
        addr,
        dir: dir.to_path_buf(),
    }
}

/// A proxied location, with the headers docs/nginx.md sets.
fn location(prefix: &str, upstream: &str) -> String {
    format!(
        r#"location /{prefix}/ {{
            proxy_pass http://{upstream}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
        }}"#
    )
}

fn ferricorn_behind(dir: &Path) -> (Server, PathBuf) {
    let sock = dir.join("app.sock");
    let server = ServerBuilder::new("basic:app")
        .workers(2)
        .args(&["-b", &format!("unix:{}", sock.display())])
        .start();
    (server, sock)
}

#[test]
fn nginx_proxies_to_ferricorn_over_a_unix_socket_and_over_tcp() {
    let dir = scratch("nginx-proxy");
    let (_server, sock) = ferricorn_behind(&dir);
    let nginx = start_nginx(&dir, &sock, _server.addr());
    for via in ["unix", "tcp"] {
        let env = http::get(nginx.addr, &format!("/{via}/env")).unwrap();
        assert_eq!(env.status, 200, "{via}");
        let env = env.text();
        // nginx is the peer, on loopback or the unix socket: its word counts.
        assert!(
            env.contains("\"HTTP_X_FORWARDED_FOR\": \"127.0.0.1\""),
            "{via}: {env}"
        );
        assert!(
            env.contains("\"wsgi.url_scheme\": \"http\""),
            "{via}: {env}"
        );
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let echoed = http::post(nginx.addr, &format!("/{via}/echo"), &body).unwrap();
        assert_eq!(echoed.status, 200, "{via}");
        assert_eq!(echoed.body, body, "{via}: the body goes through whole");
        let streamed = http::get(nginx.addr, &format!("/{via}/stream")).unwrap();
        assert_eq!(streamed.status, 200, "{via}");
        assert!(!streamed.body.is_empty(), "{via}");
    }
    let errors = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
    assert!(!errors.contains("[error]"), "{errors}");
}

#[test]
fn a_hup_and_a_term_behind_nginx_cost_no_request_the_contract_keeps() {
    let _exclusive = crate::util::exclusive();
    let dir = scratch("nginx-reload");
    let (mut server, sock) = ferricorn_behind(&dir);
    let nginx = start_nginx(&dir, &sock, server.addr());
    // A reload under load through nginx: not one failed request (a 502 counts).
    let load = Load::start(nginx.addr, "/unix/", 8);
    let warm = Instant::now() + T;
    while load.ok_so_far() < 200 && Instant::now() < warm {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.signal(Signal::SIGHUP);
    server.wait_log_count(|l| l.contains("Retiring worker"), 2, T);
    let after = load.ok_so_far() + 300;
    while load.ok_so_far() < after && Instant::now() < warm + T {
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = load.finish();
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert!(report.ok >= 500, "{}", report.ok);

    // TERM while a request is in flight through nginx: it still completes.
    let slow = std::thread::spawn({
        let addr = nginx.addr;
        move || http::get(addr, "/unix/slow?1")
    });
    server.wait_log(|l| l.contains("slow request started"), T);
    server.signal(Signal::SIGTERM);
    let resp = slow
        .join()
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "slow done\n");
    assert!(server.wait_exit(T).signal().is_some());
}
