//! The systemd notify protocol (sd_notify(3)): the test plays systemd's part, binds
//! the datagram socket `NOTIFY_SOCKET` names, and reads what the master says.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{http, scratch, Server, ServerBuilder};

const T: Duration = Duration::from_secs(15);

/// systemd's end of the notify socket: every datagram it was sent, in order.
pub struct Systemd {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` says to reach it.
    pub name: String,
    pub got: Vec<String>,
}

impl Systemd {
    /// A socket file in a scratch directory, as systemd's /run/systemd/notify.
    pub fn at_path(test: &str) -> Systemd {
        let path = scratch(test).join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Systemd::new(socket, path.display().to_string())
    }

    /// A socket in the abstract namespace: `NOTIFY_SOCKET=@name`.
    fn abstract_named(test: &str) -> Systemd {
        let name = format!("ferricorn-test-{test}-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
        Systemd::new(socket, format!("@{name}"))
    }

    fn new(socket: UnixDatagram, name: String) -> Systemd {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Systemd {
            socket,
            name,
            got: Vec::new(),
        }
    }

    /// A server of `workers` told to notify this socket (not waited for).
    fn serve(&self, app: &str, workers: usize) -> ServerBuilder {
        ServerBuilder::new(app)
            .workers(workers)
            .env("NOTIFY_SOCKET", &self.name)
    }

    /// Read datagrams until one satisfies `pred` (returned), or `timeout` passes.
    pub fn try_wait(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.got.push(message.clone());
                if pred(&message) {
                    return Some(message);
                }
            }
        }
        None
    }

    pub fn wait(&mut self, pred: impl Fn(&str) -> bool, server: &Server) -> String {
        self.try_wait(pred, T).unwrap_or_else(|| {
            panic!(
                "no such datagram; got {:?}; log:\n{}",
                self.got,
                server.log()
            )
        })
    }
}

/// The value of `KEY=` in one datagram.
pub fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

pub fn is(key: &str) -> impl Fn(&str) -> bool + '_ {
    move |m: &str| field(m, key) == Some("1")
}

fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
}

#[test]
fn ready_once_every_worker_is_ready_then_reloading_ready_and_stopping() {
    let mut systemd = Systemd::at_path("notify-lifecycle");
    let mut server = systemd.serve("basic:app", 2).spawn();
    let ready = systemd.wait(is("READY"), &server);
    // The master logs each worker's readiness before it says READY=1.
    server.wait_log_count(|l| l.contains(") ready"), 2, T);
    assert_eq!(
        field(&ready, "MAINPID"),
        Some(server.pid.to_string().as_str()),
        "{ready}"
    );
    server.wait_ready();
    let status = field(&ready, "STATUS").expect("a STATUS with READY=1");
    assert!(
        status.contains(&format!(
            "2 workers ready, serving on http://{}",
            server.addr()
        )),
        "{status}"
    );
    // Before it, only statuses of a start under way.
    let before = &systemd.got[..systemd.got.len() - 1];
    assert!(
        before
            .iter()
            .all(|m| m.starts_with("STATUS=Starting") && !m.contains("READY")),
        "{before:?}"
    );
    // Neither the app nor what it starts can talk to systemd in the master's name.
    assert_eq!(
        http::get(server.addr(), "/osenv?NOTIFY_SOCKET")
            .unwrap()
            .text(),
        "<unset>"
    );

    // HUP (Type=notify-reload's reload signal): RELOADING=1 with the time it began,
    // READY=1 once the new generation is.
    let hup_at = monotonic_usec();
    server.signal(Signal::SIGHUP);
    let reloading = systemd.wait(is("RELOADING"), &server);
    let usec: u64 = field(&reloading, "MONOTONIC_USEC")
        .expect("MONOTONIC_USEC in the RELOADING=1 datagram")
        .parse()
        .unwrap();
    assert!(
        usec >= hup_at && usec <= monotonic_usec(),
        "{usec} not between {hup_at} and now"
    );
    let ready = systemd.wait(is("READY"), &server);
    server.wait_log_count(|l| l.contains(") ready"), 4, T);
    let status = field(&ready, "STATUS").unwrap();
    assert!(
        status.contains("2 workers ready") && status.contains("last reload"),
        "{status}"
    );
    // Meanwhile, the reload's progress.
    assert!(
        systemd
            .got
            .iter()
            .any(|m| m.contains("STATUS=Reloading: 1 of 2 new workers ready")),
        "{:?}",
        systemd.got
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);

    server.signal(Signal::SIGTERM);
    let stopping = systemd.wait(is("STOPPING"), &server);
    assert!(
        field(&stopping, "STATUS")
            .unwrap()
            .contains("graceful stop after SIGTERM"),
        "{stopping}"
    );
    assert_eq!(server.wait_exit(T).signal(), Some(libc::SIGTERM));
}

#[test]
fn a_reload_that_fails_says_ready_again_with_the_old_generation() {
    let mut systemd = Systemd::at_path("notify-reload-failed");
    let dir = scratch("notify-reload-failed-app");
    std::fs::write(
        dir.join("changing.py"),
        "def app(e, sr):\n    sr('200 OK', [])\n    return [b'v1']\n",
    )
    .unwrap();
    let server = systemd.serve("changing:app", 2).chdir(&dir).start();
    systemd.wait(is("READY"), &server);

    std::fs::write(dir.join("changing.py"), "import no_such_dependency\n").unwrap();
    server.signal(Signal::SIGHUP);
    systemd.wait(is("RELOADING"), &server);
    let ready = systemd.wait(is("READY"), &server);
    server.wait_log(|l| l.contains("Reload failed: App failed to load"), T);
    let status = field(&ready, "STATUS").unwrap();
    assert!(
        status.contains("2 workers ready") && status.contains("failed: App failed to load"),
        "{status}"
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().text(), "v1");
}

#[test]
fn watchdog_pings_at_half_the_interval_and_only_for_the_master() {
    let mut systemd = Systemd::at_path("notify-watchdog");
    let server = systemd
        .serve("basic:app", 1)
        .env("WATCHDOG_USEC", "200000")
        .start();
    for _ in 0..5 {
        systemd.wait(is("WATCHDOG"), &server);
    }
    assert_eq!(
        http::get(server.addr(), "/osenv?WATCHDOG_USEC")
            .unwrap()
            .text(),
        "<unset>"
    );

    // WATCHDOG_PID names another process: the watchdog is not this one's.
    let mut systemd = Systemd::at_path("notify-watchdog-other");
    let server = systemd
        .serve("basic:app", 1)
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", &std::process::id().to_string())
        .start();
    systemd.wait(is("READY"), &server);
    // 1 s is five intervals of 100 ms.
    let ping = systemd.try_wait(is("WATCHDOG"), Duration::from_secs(1));
    assert_eq!(ping, None, "{:?}", systemd.got);
}

#[test]
fn an_abstract_socket_is_notified() {
    let mut systemd = Systemd::abstract_named("abstract");
    // The test's socket is one systemd's own client reaches, if it is installed.
    if Path::new("/usr/bin/systemd-notify").exists() {
        let out = std::process::Command::new("/usr/bin/systemd-notify")
            .args(["--no-block", "--status=from systemd-notify"])
            .env("NOTIFY_SOCKET", &systemd.name)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let got = systemd.try_wait(|m| m.contains("STATUS=from systemd-notify"), T);
        assert!(got.is_some(), "{:?}", systemd.got);
    }
    let server = systemd.serve("basic:app", 1).start();
    let ready = systemd.wait(is("READY"), &server);
    assert_eq!(
        field(&ready, "MAINPID"),
        Some(server.pid.to_string().as_str())
    );
}

#[test]
fn an_unreachable_socket_is_warned_of_once_and_serving_goes_on() {
    let dir = scratch("notify-unreachable");
    let not_a_socket = dir.join("regular-file");
    std::fs::write(&not_a_socket, "").unwrap();
    for (path, cause) in [
        (dir.join("missing"), "No such file or directory"),
        (not_a_socket, "Connection refused"),
    ] {
        let path = path.display().to_string();
        let server = ServerBuilder::new("basic:app")
            .env("NOTIFY_SOCKET", &path)
            .start();
        assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
        // A reload and its READY=1 are more messages: still the one warning.
        server.signal(Signal::SIGHUP);
        server.wait_log_count(|l| l.contains(") ready"), 2, T);
        assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
        let log = server.log();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("NOTIFY_SOCKET"))
            .collect();
        assert_eq!(warnings.len(), 1, "{}", server.log());
        assert!(
            warnings[0].contains("[WARNING]")
                && warnings[0].contains(&path)
                && warnings[0].contains(cause),
            "{}",
            warnings[0]
        );
    }
}

#[test]
fn a_failed_start_says_why_in_its_last_status() {
    // The app cannot be imported: the workers exit 4, and so does the master.
    let mut systemd = Systemd::at_path("notify-failed-app");
    let mut server = systemd.serve("no_such_module:app", 1).spawn();
    assert_eq!(server.wait_exit(T).code(), Some(4), "{}", server.log());
    systemd.try_wait(|_| false, Duration::from_millis(200));
    let last = systemd.got.last().cloned().unwrap_or_default();
    let status = field(&last, "STATUS").unwrap_or_default();
    assert!(
        status.starts_with("Failed to start: App failed to load")
            && status.contains("no_such_module"),
        "{:?}",
        systemd.got
    );
    assert!(
        !systemd.got.iter().any(|m| is("READY")(m)),
        "{:?}",
        systemd.got
    );

    // Workers that die while importing the app, until --boot-deadline gives up.
    let mut systemd = Systemd::at_path("notify-failed-crash-loop");
    let mut server = systemd
        .serve("dies_at_import:app", 1)
        .args(&["--boot-deadline", "1"])
        .spawn();
    assert!(!server.wait_exit(T).success(), "{}", server.log());
    systemd.try_wait(|_| false, Duration::from_millis(200));
    let last = systemd.got.last().cloned().unwrap_or_default();
    assert!(
        field(&last, "STATUS")
            .is_some_and(|s| s.starts_with("Failed to start: workers kept dying")),
        "{:?}",
        systemd.got
    );

    // The port is taken: the errno comes too (EADDRINUSE).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut systemd = Systemd::at_path("notify-failed-bind");
    let mut server = systemd
        .serve("basic:app", 1)
        .no_default_bind()
        .args(&["-b", &taken.local_addr().unwrap().to_string()])
        .spawn();
    assert_eq!(server.wait_exit(T).code(), Some(5), "{}", server.log());
    systemd.try_wait(|_| false, Duration::from_millis(200));
    let last = systemd.got.last().cloned().unwrap_or_default();
    assert!(
        field(&last, "STATUS").is_some_and(|s| s.starts_with("Failed to start: cannot bind")),
        "{:?}",
        systemd.got
    );
    assert_eq!(
        field(&last, "ERRNO"),
        Some(libc::EADDRINUSE.to_string().as_str())
    );
}

#[test]
fn a_usr2_upgrade_says_ready_again_from_the_same_pid() {
    let mut systemd = Systemd::at_path("notify-upgrade");
    let server = systemd.serve("basic:app", 2).start();
    systemd.wait(is("READY"), &server);
    server.signal(Signal::SIGUSR2);
    server.wait_log(
        |l| l.contains("Upgraded: adopted 2 workers of the previous binary"),
        T,
    );
    let ready = systemd.wait(is("READY"), &server);
    assert_eq!(
        field(&ready, "MAINPID"),
        Some(server.pid.to_string().as_str())
    );
    // After the new image's own two workers.
    server.wait_log_count(|l| l.contains(") ready"), 4, T);
    // The new image took NOTIFY_SOCKET out of its workers' environment too.
    assert_eq!(
        http::get(server.addr(), "/osenv?NOTIFY_SOCKET")
            .unwrap()
            .text(),
        "<unset>"
    );
}
