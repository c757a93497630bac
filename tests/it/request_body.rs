//! Request bodies the app reads while they arrive: larger than
//! `--body-buffer-size`, or sent only after `100 Continue`.

use std::io::{self, Read};
use std::time::Duration;

use crate::util::http::{self, Client};
use crate::util::ServerBuilder;

fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut raw = Vec::new();
    for part in body.chunks(piece) {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    raw
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"abcdefghij\n"[i % 11]).collect()
}

/// Nothing arrives from the server within `wait`.
fn silent_for(c: &mut Client, wait: Duration) -> bool {
    c.stream.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    let silent = matches!(c.stream.read(&mut b), Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
    c.stream.set_read_timeout(Some(http::IO_TIMEOUT)).unwrap();
    silent
}

#[test]
fn large_bodies_stream_through_and_the_connection_is_reused() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--body-buffer-size", "1000"])
        .start();
    let body = pattern(300_000);
    let mut c = Client::connect(server.addr()).unwrap();
    // Content-Length, then chunked with a pipelined GET right behind it: the
    // bytes after the body must reach the next request, not the app.
    let mut raw = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    raw.extend_from_slice(
        b"POST /read-all HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    raw.extend_from_slice(&chunked(&body, 7000));
    raw.extend_from_slice(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    c.send(&raw).unwrap();
    let echoed = c.read_response(false).unwrap();
    assert_eq!(echoed.status, 200);
    assert!(echoed.body == body, "the echoed body differs");
    assert_eq!(echoed.header("connection"), None);
    let counted = c.read_response(false).unwrap();
    assert_eq!(counted.text(), body.len().to_string());
    assert_eq!(c.read_response(false).unwrap().text(), "Hello, World!\n");
}

#[test]
fn the_app_runs_before_a_large_body_has_arrived() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--body-buffer-size", "1000"])
        .start();
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(
        b"POST /first-line HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nfirst line\nsecond",
    )
    .unwrap();
    // The rest of the body is never sent: only a streaming server can answer.
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.text(), "first line\n");
    // Unread body: the connection cannot carry another request.
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(c.is_closed_by_server());
}

#[test]
fn streamed_lines_read_the_same_as_buffered_ones() {
    let streamed = ServerBuilder::new("basic:app")
        .args(&["--body-buffer-size", "0"])
        .start();
    let buffered = ServerBuilder::new("basic:app").start();
    let mut body = Vec::new();
    for n in [0usize, 5, 70_000, 1, 0, 130_000, 3] {
        body.extend(std::iter::repeat_n(b'y', n));
        body.push(b'\n');
    }
    body.extend_from_slice(b"no newline at the end");
    for how in ["iter", "readlines", "1000", "65536", "1"] {
        let path = format!("/lines?{how}");
        let a = http::post(streamed.addr(), &path, &body).unwrap();
        let b = http::post(buffered.addr(), &path, &body).unwrap();
        assert_eq!(a.status, 200, "{how}");
        assert_eq!(a.text(), b.text(), "{how}");
    }
}

#[test]
fn continue_is_sent_on_the_apps_first_read_and_not_before() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"POST /wait-then-echo?1 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    // The app sleeps a second before it reads.
    assert!(
        silent_for(&mut c, Duration::from_millis(500)),
        "100 Continue came before the app read"
    );
    assert_eq!(c.read_response(false).unwrap().status, 100);
    c.send(b"data").unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.text(), "data");
    assert_eq!(resp.header("connection"), None);
    assert_eq!(c.get("/").unwrap().status, 200);
}

#[test]
fn an_app_that_never_reads_gets_no_continue_and_the_connection_closes() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.status, 200, "the final answer comes first");
    assert_eq!(resp.text(), "Hello, World!\n");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(c.is_closed_by_server());
}

#[test]
fn a_client_that_leaves_mid_body_surfaces_in_the_app_and_the_worker_lives() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--body-buffer-size", "1000"])
        .start();
    let pid = http::get(server.addr(), "/pid").unwrap().text();
    let mut c = Client::connect(server.addr()).unwrap();
    let mut raw = b"POST /read-all HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b'z'; 50_000]);
    c.send(&raw).unwrap();
    drop(c);
    server.wait_log(
        |l| l.contains("body read failed after 50000 bytes: ClientDisconnected (caught by name)"),
        Duration::from_secs(10),
    );
    assert_eq!(http::get(server.addr(), "/pid").unwrap().text(), pid);
    assert!(
        !server
            .log()
            .contains("Error handling request POST /read-all"),
        "a client leaving is not an app error:\n{}",
        server.log()
    );
}

#[test]
fn a_stalled_streamed_body_is_a_408_after_the_body_timeout() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app")
        .args(&["--body-buffer-size", "1000", "--body-timeout", "1"])
        .start();
    let mut c = Client::connect(server.addr()).unwrap();
    let mut raw = b"POST /read-all HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b'z'; 25_000]);
    c.send(&raw).unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.status, 408);
    assert!(c.is_closed_by_server());
    server.wait_log(
        // read(10000) returned two full pieces; the third waited in vain.
        |l| l.contains("body read failed after 20000 bytes: TimeoutError"),
        Duration::from_secs(5),
    );
    server.wait_log(
        |l| l.contains("POST /read-all: the request body could not be read; answered 408"),
        Duration::from_secs(5),
    );
}

#[test]
fn a_bad_chunk_after_the_app_started_is_a_400_and_nothing_is_smuggled() {
    let server = ServerBuilder::new("recorder:app")
        .args(&["--body-buffer-size", "100"])
        .start();
    let mut c = Client::connect(server.addr()).unwrap();
    let mut raw =
        b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(format!("{:x}\r\n", 500).as_bytes());
    raw.extend_from_slice(&[b'q'; 500]);
    c.send(&raw).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Missing CRLF after the chunk data, then what would be a second request.
    c.send(b"XXGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.status, 400);
    assert!(c.is_closed_by_server());
    // The recorder logs every request it sees; this one marks the end.
    http::get(server.addr(), "/after").unwrap();
    server.wait_log(|l| l.contains("app saw GET /after"), Duration::from_secs(5));
    let log = server.log();
    assert!(log.contains("app saw POST /upload"), "{log}");
    assert!(!log.contains("/smuggled"), "{log}");
}

#[test]
fn a_thread_waiting_for_a_slow_upload_does_not_hold_the_others() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--threads", "2", "--body-buffer-size", "1000"])
        .start();
    let mut uploader = Client::connect(server.addr()).unwrap();
    let mut raw = b"POST /read-all HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b'u'; 2000]);
    uploader.send(&raw).unwrap();
    // The upload stalls (the body timeout is 30 s); the other thread answers
    // at once only if the waiting one released the GIL.
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    uploader.send(&[b'u'; 98_000]).unwrap();
    assert_eq!(uploader.read_response(false).unwrap().text(), "100000");
}
