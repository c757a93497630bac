//! Slow, idle and oversized clients never pin a worker: the event loop parks them
//! and the timeouts close them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::util::http::{self, Client};
use crate::util::ServerBuilder;

/// Read until the server closes the connection (EOF or reset), bounded.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) if start.elapsed() < limit => return Some((start.elapsed(), got)),
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn half_a_head_then_silence_is_closed_at_the_header_timeout() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app")
        .args(&["--header-timeout", "1"])
        .start();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow:")
        .unwrap();
    let (after, got) = closed_within(&mut s, Duration::from_secs(5)).expect("closed by the server");
    assert!(
        after >= Duration::from_millis(900),
        "not before the timeout: {after:?}"
    );
    assert!(
        got.is_empty(),
        "nothing is answered to half a request: {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn trickling_bytes_do_not_extend_the_header_timeout() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app")
        .args(&["--header-timeout", "1"])
        .start();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    // One header byte every 100 ms: a slowloris client.
    let mut closed = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100)); // the client's own pace, the point of the test
        if s.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        s.set_nonblocking(true).unwrap();
        let r = s.read(&mut probe);
        s.set_nonblocking(false).unwrap();
        if matches!(r, Ok(0)) || matches!(&r, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickling head was never cut off");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "cut at the header timeout, not later: {:?}",
        start.elapsed()
    );
}

#[test]
fn a_stalled_body_is_closed_at_the_body_timeout() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app")
        .args(&["--body-timeout", "1"])
        .start();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let (after, _) = closed_within(&mut s, Duration::from_secs(5)).expect("closed by the server");
    assert!(after >= Duration::from_millis(900), "{after:?}");
}

#[test]
fn an_oversized_body_gets_413_before_it_is_read() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--limit-request-body", "1000"])
        .start();
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n")
        .unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(
        http::post(server.addr(), "/echo", &[b'x'; 1000])
            .unwrap()
            .body
            .len(),
        1000
    );
}

#[test]
fn slowloris_clients_do_not_delay_a_normal_request() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app").workers(2).start();
    // 200 connections that each send part of a head and then trickle.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr()).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-A:").unwrap();
            s
        })
        .collect();
    for round in 0..3 {
        for s in slow.iter_mut() {
            let _ = s.write_all(b"a");
        }
        let start = Instant::now();
        let resp = http::get(server.addr(), "/").unwrap();
        assert_eq!(resp.status, 200);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "round {round}: a normal request took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn five_hundred_idle_keep_alive_connections_do_not_block_a_new_client() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app").workers(2).start();
    let mut idle: Vec<Client> = Vec::new();
    for _ in 0..500 {
        let mut c = Client::connect(server.addr()).unwrap();
        assert_eq!(c.get("/").unwrap().status, 200);
        idle.push(c);
    }
    let start = Instant::now();
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // And the idle ones are still usable.
    assert_eq!(idle[0].get("/").unwrap().status, 200);
    assert_eq!(idle[499].get("/").unwrap().status, 200);
}

#[test]
fn a_client_slow_to_read_a_large_response_does_not_hold_up_the_worker() {
    let server = ServerBuilder::new("basic:app")
        .workers(1)
        .args(&["--access-logfile", "-"])
        .start();
    let size = 16 << 20;
    let expected: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    for kind in ["bytes", "file", "chunked", "list"] {
        // 16 MiB is far more than the socket buffers hold while the client reads nothing.
        let mut slow = Client::connect(server.addr()).unwrap();
        slow.send(format!("GET /big?{kind} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        // Let the worker get stuck, if it would.
        std::thread::sleep(Duration::from_millis(300));
        // The only worker answers someone else meanwhile (a blocked worker would
        // make this wait out the 30 s write stall; the client gives up at 15 s).
        let started = Instant::now();
        let other = http::get(server.addr(), "/").unwrap_or_else(|e| {
            panic!("{kind}: another client waited {:?}: {e}", started.elapsed())
        });
        assert_eq!(other.status, 200, "{kind}");
        // The slow client then gets all of its response, intact, and the
        // connection stays in step for another request.
        let big = slow.read_response(false).unwrap();
        assert_eq!(big.status, 200, "{kind}");
        assert_eq!(big.body.len(), size, "{kind}");
        assert!(big.body == expected, "{kind}: the body's bytes");
        if kind == "chunked" {
            // A generator of pieces: paused while the client lagged, resumed, and
            // closed at its end.
            assert_eq!(big.header("transfer-encoding"), Some("chunked"));
            server.wait_log(
                |l| l.contains("big generator closed after the last piece"),
                Duration::from_secs(5),
            );
        }
        // Logged once whole, with every byte counted.
        server.wait_stdout(
            |l| l.contains(&format!("/big?{kind} HTTP/1.1\" 200 {size}")),
            Duration::from_secs(5),
        );
        assert_eq!(slow.get("/").unwrap().status, 200, "{kind}");
    }
}

#[test]
fn a_client_that_leaves_a_paused_response_ends_it_and_the_worker_goes_on() {
    let server = ServerBuilder::new("basic:app").workers(1).start();
    let mut slow = TcpStream::connect(server.addr()).unwrap();
    slow.write_all(b"GET /big?chunked HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 4096];
    slow.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200 OK\r\n"));
    std::thread::sleep(Duration::from_millis(300)); // the socket fills; the response pauses
    drop(slow);
    // The app's generator is closed (its finally runs) and nothing is logged as an error.
    server.wait_log(
        |l| l.contains("big generator closed early"),
        Duration::from_secs(10),
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    assert!(
        !server.log().contains("Error handling request"),
        "{}",
        server.log()
    );
}

#[test]
fn a_graceful_stop_lets_a_slow_download_finish() {
    let mut server = ServerBuilder::new("basic:app").workers(1).start();
    let size = 16 << 20;
    let mut slow = Client::connect(server.addr()).unwrap();
    slow.send(b"GET /big?file HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // The response is under way, most of it waiting for the client, when the stop comes.
    std::thread::sleep(Duration::from_millis(300));
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_log(
        |l| l.contains("Handling signal: term"),
        Duration::from_secs(5),
    );
    let big = slow.read_response(false).unwrap();
    assert_eq!(big.status, 200);
    assert!(
        big.body.len() == size
            && big
                .body
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i % 251) as u8),
        "the whole download arrives intact ({} bytes)",
        big.body.len()
    );
    let status = server.wait_exit(Duration::from_secs(20));
    // The stop itself ends as a TERM stop does by default, after the download.
    assert_eq!(status.signal(), Some(15));
}

#[test]
fn a_reload_and_an_upgrade_give_the_open_sockets_the_deferred_accepts_now_configured() {
    let _exclusive = crate::util::exclusive();
    let dir = crate::util::scratch("defer-reload");
    let file = dir.join("ferricorn.toml");
    std::fs::write(&file, "workers = 1\nbind = [\"127.0.0.1:0\"]\n").unwrap();
    let server = ServerBuilder::new("basic:app")
        .no_workers_flag()
        .no_default_bind()
        .args(&["-c", file.to_str().unwrap()])
        .start();
    // A connection that sends nothing, a moment later: who holds it?
    let silent_state = || {
        let silent = TcpStream::connect(server.addr()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        server_side_state(server.addr(), silent.local_addr().unwrap())
    };
    assert_eq!(silent_state().as_deref(), Some("03"), "held by default");

    std::fs::write(
        &file,
        "workers = 1\nbind = [\"127.0.0.1:0\"]\ndefer_accept = false\nbacklog = 64\n",
    )
    .unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.wait_log(
        |l| l.contains("listening sockets now have backlog 64 and deferred accepts off"),
        Duration::from_secs(15),
    );
    assert_eq!(
        silent_state().as_deref(),
        Some("01"),
        "handed over after the HUP"
    );

    // The upgraded binary reads the file again: deferred accepts back on, and another
    // address, which an upgrade cannot take (the sockets are inherited), so it says so.
    std::fs::write(&file, "workers = 1\nbind = [\"127.0.0.2:0\"]\n").unwrap();
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    server.wait_log(
        |l| l.contains("Upgraded: adopted 1 workers"),
        Duration::from_secs(15),
    );
    assert!(
        server.log().lines().any(|l| l.contains("[WARNING]")
            && l.contains(
                "bind changed in the configuration; an upgrade keeps the current sockets"
            )),
        "{}",
        server.log()
    );
    assert_eq!(
        silent_state().as_deref(),
        Some("03"),
        "held again after the USR2"
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

/// The server side's TCP state of the connection from `client` to `server`, from
/// /proc/net/tcp: "03" SYN_RECV (the kernel holds it), "01" ESTABLISHED.
fn server_side_state(server: std::net::SocketAddr, client: std::net::SocketAddr) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_of = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (port_of(f[1]) == Some(server.port()) && port_of(f[2]) == Some(client.port()))
            .then(|| f[3].to_string())
    })
}

#[test]
fn a_connection_that_has_sent_nothing_waits_in_the_kernel_not_in_a_worker() {
    // TCP_DEFER_ACCEPT: a worker is woken for a connection once its request has
    // arrived, not before; `--no-defer-accept` hands it over at once.
    for (args, held) in [(&[][..], true), (&["--no-defer-accept"][..], false)] {
        let server = ServerBuilder::new("basic:app").args(args).start();
        let mut silent = TcpStream::connect(server.addr()).unwrap();
        let me = silent.local_addr().unwrap();
        // Long enough for a worker to have accepted it, were it handed over.
        std::thread::sleep(Duration::from_millis(300));
        let state = server_side_state(server.addr(), me);
        let want = if held { "03" } else { "01" };
        assert_eq!(
            state.as_deref(),
            Some(want),
            "{args:?}: server side of {me}"
        );
        // Either way, the request is answered once it comes.
        silent
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        silent.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{args:?}: {answer}");
    }
}
