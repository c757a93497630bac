//! Socket activation: ferricorn serves the sockets systemd passes (`LISTEN_FDS`,
//! fds from 3 on, for the pid in `LISTEN_PID`), and leaves them to systemd when it
//! stops. systemd is played by the test, which binds the socket, and by a shell
//! that sets the variables for its own pid and then execs ferricorn in its place.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{http, ServerBuilder};

const T: Duration = Duration::from_secs(15);

/// Started as systemd starts a service: a shell sets `LISTEN_FDS` (as given) and
/// `LISTEN_PID` for its own pid, then execs ferricorn in its place.
pub fn as_systemd(builder: ServerBuilder, fds: &str) -> ServerBuilder {
    let script = format!("LISTEN_PID=$$ LISTEN_FDS={fds} LISTEN_FDNAMES=web exec \"$0\" \"$@\"");
    builder.wrapped_in(&["sh", "-c", &script])
}

pub fn activated(socket: RawFd) -> ServerBuilder {
    let builder = ServerBuilder::new("basic:app")
        .no_default_bind()
        .fd_3(socket);
    as_systemd(builder, "1")
}

/// The server exits 5 before any worker starts, saying `why` in one line.
fn assert_refused(builder: ServerBuilder, why: &str) {
    let mut server = builder.spawn();
    let status = server.wait_exit(T);
    let log = server.log();
    assert_eq!(status.code(), Some(5), "{log}");
    let line = format!("cannot take the sockets systemd passed (LISTEN_FDS): {why}");
    assert!(log.contains(&line), "{log}");
    assert!(!log.contains("Booting worker"), "{log}");
}

fn send_request(addr: std::net::SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(addr).expect("the socket still listens");
    client
        .write_all(b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    client
}

fn answer(mut client: TcpStream) -> String {
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    client.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn sockets_from_systemd_are_served_and_kept_listening_across_restarts() {
    let _exclusive = crate::util::exclusive();
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    // A client that comes before the server has started waits in the socket's queue.
    let early = send_request(addr);

    let mut first = activated(socket.as_raw_fd()).start();
    assert_eq!(first.addr(), addr, "{}", first.log());
    assert!(
        first
            .log()
            .contains("Using 1 listening socket(s) from systemd (LISTEN_FDS)"),
        "{}",
        first.log()
    );
    let text = answer(early);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    // The app and its subprocesses do not see the variables (nor the fds, which
    // are close-on-exec now).
    for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        let seen = http::get(addr, &format!("/osenv?{name}")).unwrap().text();
        assert_eq!(seen, "<unset>", "{name}");
    }

    // An upgraded binary knows the sockets are systemd's too.
    first.signal(Signal::SIGUSR2);
    first.wait_log(|l| l.contains("Upgraded: adopted 1 workers"), T);
    first.wait_log(|l| l.contains("Retiring worker"), T);

    // A stop leaves the socket listening: a client that comes meanwhile waits ...
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit(T).signal(), Some(15), "{}", first.log());
    let between = send_request(addr);
    // ... for the next start, which answers it.
    let mut second = activated(socket.as_raw_fd()).start();
    let text = answer(between);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(T).signal(), Some(15), "{}", second.log());
}

#[test]
fn variables_set_for_another_process_are_ignored_and_not_passed_on() {
    // As when a parent that systemd started runs ferricorn with its environment.
    let server = ServerBuilder::new("basic:app")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .start();
    assert!(!server.log().contains("from systemd"), "{}", server.log());
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    let seen = http::get(server.addr(), "/osenv?LISTEN_FDS")
        .unwrap()
        .text();
    assert_eq!(seen, "<unset>");
}

#[test]
fn no_socket_passed_means_binding_as_configured_and_a_bad_count_is_refused() {
    // LISTEN_FDS=0: activated, but with nothing to take (sd_listen_fds gives 0).
    let none = as_systemd(ServerBuilder::new("basic:app"), "0").start();
    assert!(!none.log().contains("from systemd"), "{}", none.log());
    assert_eq!(http::get(none.addr(), "/").unwrap().status, 200);

    assert_refused(
        as_systemd(ServerBuilder::new("basic:app"), "lots"),
        "LISTEN_FDS: `lots` is not a number of sockets",
    );
}
