//! A response the app makes as it goes reaches the client as it is made (PEP
//! 3333: a server must not delay the transmission of any block): generators,
//! `write()`, Flask's and Django's streaming responses, pipelined answers; and a
//! client that leaves a stream frees the worker and runs the generator's `finally`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::{http, test_venv, ServerBuilder};

/// Send `request`, then read until every marker has arrived (or `limit` passed):
/// when each first appeared, from the moment the request was sent, and all bytes.
fn arrivals(
    addr: SocketAddr,
    request: &str,
    markers: &[&str],
    limit: Duration,
) -> (Vec<Duration>, String) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    sock.write_all(request.as_bytes()).unwrap();
    let sent = Instant::now();
    let mut got = Vec::new();
    let mut seen = vec![None; markers.len()];
    let mut buf = [0u8; 65536];
    while seen.iter().any(Option::is_none) && sent.elapsed() < limit {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
        let text = String::from_utf8_lossy(&got);
        for (i, m) in markers.iter().enumerate() {
            if seen[i].is_none() && text.contains(m) {
                seen[i] = Some(sent.elapsed());
            }
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let times = seen
        .into_iter()
        .zip(markers)
        .map(|(t, m)| t.unwrap_or_else(|| panic!("{m:?} never came: {text}")))
        .collect();
    (times, text)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// Each block arrives as it is made: the first at once, then one per `gap`.
fn assert_paced(times: &[Duration], gap: Duration, text: &str) {
    assert!(
        times[0] < Duration::from_millis(300),
        "first block at {:?}: {text}",
        times[0]
    );
    for pair in times.windows(2) {
        let spacing = pair[1].saturating_sub(pair[0]);
        assert!(
            spacing > gap / 2 && spacing < gap * 2,
            "blocks {gap:?} apart arrived {spacing:?} apart ({times:?}): {text}"
        );
    }
}

#[test]
fn a_sleeping_generators_blocks_arrive_as_they_are_made() {
    let server = ServerBuilder::new("streaming:app").start();
    let markers = ["block 0", "block 1", "block 2", "block 3", "\r\n0\r\n\r\n"];
    let (times, text) = arrivals(
        server.addr(),
        &get("/blocks?4,0.4"),
        &markers,
        Duration::from_secs(10),
    );
    assert_paced(&times[..4], Duration::from_millis(400), &text);
    assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
    assert!(text.ends_with("0\r\n\r\n"), "the body ends: {text}");
}

#[test]
fn a_large_first_block_does_not_hold_back_the_small_ones_after_it() {
    let server = ServerBuilder::new("streaming:app").start();
    let markers = ["xxxxxxxxxx", "event 0", "event 1", "event 2"];
    let (times, _) = arrivals(
        server.addr(),
        &get("/big-then-small"),
        &markers,
        Duration::from_secs(10),
    );
    assert_paced(
        &times,
        Duration::from_millis(400),
        "70 KB, then an event every 0.4 s",
    );
}

#[test]
fn what_the_app_gives_write_arrives_before_the_app_returns() {
    let server = ServerBuilder::new("streaming:app").start();
    let (times, text) = arrivals(
        server.addr(),
        &get("/write"),
        &["first", "second", "\r\n0\r\n\r\n"],
        Duration::from_secs(10),
    );
    assert!(
        times[0] < Duration::from_millis(300),
        "first at {:?}: {text}",
        times[0]
    );
    assert!(
        times[1] >= Duration::from_millis(900),
        "second at {:?}",
        times[1]
    );
    // The connection stays usable: the body was framed (chunked) to its end.
    assert!(text.ends_with("0\r\n\r\n"), "{text}");
}

#[test]
fn an_http_1_0_stream_is_close_delimited_and_paced() {
    let server = ServerBuilder::new("streaming:app").start();
    let markers = ["block 0", "block 1", "block 2"];
    let request = "GET /blocks?3,0.4 HTTP/1.0\r\n\r\n";
    let (times, text) = arrivals(server.addr(), request, &markers, Duration::from_secs(10));
    assert_paced(&times, Duration::from_millis(400), &text);
    assert!(
        !text.contains("chunked") && !text.contains("Content-Length"),
        "{text}"
    );
}

#[test]
fn a_client_that_reads_a_stream_slowly_pauses_it_and_holds_no_worker() {
    let server = ServerBuilder::new("streaming:app").start();
    let mut slow = TcpStream::connect(server.addr()).unwrap();
    slow.write_all(get("/many").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the socket fills; nothing is read
    let other = Instant::now();
    assert_eq!(http::get(server.addr(), "/fast").unwrap().text(), "fast\n");
    assert!(
        other.elapsed() < Duration::from_millis(500),
        "{:?}",
        other.elapsed()
    );
    // And the paused stream arrives whole once its client reads.
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !got.ends_with(b"0\r\n\r\n") {
        let n = slow.read(&mut buf).unwrap();
        assert!(n > 0, "closed early after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let ys = got[head_end..].iter().filter(|&&b| b == b'y').count();
    assert_eq!(ys, 4096 * 1024);
}

#[test]
fn a_fast_pipelined_answer_does_not_wait_for_the_slow_one_after_it() {
    let server = ServerBuilder::new("streaming:app").start();
    let both = format!("{}{}", get("/fast"), get("/slow"));
    let (times, _) = arrivals(
        server.addr(),
        &both,
        &["fast", "slow"],
        Duration::from_secs(10),
    );
    assert!(
        times[0] < Duration::from_millis(300),
        "fast at {:?}",
        times[0]
    );
    assert!(
        times[1] >= Duration::from_millis(1400),
        "slow at {:?}",
        times[1]
    );
}

/// Ask for `path`, see `first` arrive, stay `for_` longer, then close the connection.
fn leave_after(addr: SocketAddr, path: &str, first: &str, for_: Duration) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.write_all(get(path).as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = sock.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains(first));
    std::thread::sleep(for_);
}

/// An endless stream whose client leaves after a second: the generator's
/// `finally` runs soon after, and the only worker serves the next request at once.
fn a_client_leaving_an_endless_stream_frees_the_worker(extra: &[&str]) {
    let server = ServerBuilder::new("streaming:app")
        .args(extra)
        .args(&["--log-level", "debug", "--timeout", "30"])
        .start();
    leave_after(server.addr(), "/endless", "tick 0", Duration::from_secs(1));
    let left = Instant::now();
    server.wait_log(
        |l| l.contains("endless stream closed after"),
        Duration::from_secs(2),
    );
    assert!(
        left.elapsed() < Duration::from_secs(2),
        "{:?}",
        left.elapsed()
    );
    let next = Instant::now();
    assert_eq!(http::get(server.addr(), "/fast").unwrap().text(), "fast\n");
    assert!(
        next.elapsed() < Duration::from_millis(500),
        "{:?}",
        next.elapsed()
    );
    assert_client_left_quietly(&server);
}

/// The worker said the client went away, and did not take it for an app error.
fn assert_client_left_quietly(server: &crate::util::Server) {
    // The worker logs it after the app's `finally` printed: it may still be on its way.
    server.wait_log(
        |l| l.contains("went away during the response"),
        Duration::from_secs(5),
    );
    let log = server.log();
    assert!(
        !log.contains("Error handling request"),
        "not an app error: {log}"
    );
}

#[test]
fn a_client_leaving_an_endless_stream_is_noticed_and_its_finally_runs() {
    a_client_leaving_an_endless_stream_frees_the_worker(&[]);
}

#[test]
fn the_same_with_threads() {
    a_client_leaving_an_endless_stream_frees_the_worker(&["--threads", "4"]);
}

#[test]
fn write_into_a_client_that_left_raises_client_disconnected_in_the_app() {
    let server = ServerBuilder::new("streaming:app")
        .args(&["--log-level", "debug"])
        .start();
    leave_after(server.addr(), "/endless-writes", "written", Duration::ZERO);
    server.wait_log(
        |l| l.contains("write() raised ClientDisconnected"),
        Duration::from_secs(3),
    );
    assert_eq!(http::get(server.addr(), "/fast").unwrap().text(), "fast\n");
    assert_client_left_quietly(&server);
}

#[test]
fn head_on_an_endless_stream_sends_no_body_and_closes_the_iterable() {
    let server = ServerBuilder::new("streaming:app").start();
    let mut c = http::Client::connect(server.addr()).unwrap();
    c.send(b"HEAD /endless HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let response = c.read_response(true).unwrap();
    assert_eq!(response.status, 200);
    assert!(response.body.is_empty());
    server.wait_log(
        |l| l.contains("endless stream closed after"),
        Duration::from_secs(5),
    );
    // Nothing stray on the connection: the next answer is the next request's.
    assert_eq!(c.get("/fast").unwrap().text(), "fast\n");
}

/// A framework's streaming response from tests/apps/streaming.py (the test venv
/// has the framework): its pieces, made 0.5 s apart, arrive 0.5 s apart.
fn framework_stream_is_paced(app: &str, path: &str, markers: &[&str]) -> String {
    let server = ServerBuilder::new(app)
        .env("VIRTUAL_ENV", test_venv().to_str().unwrap())
        .start();
    let (times, text) = arrivals(server.addr(), &get(path), markers, Duration::from_secs(10));
    assert_paced(&times, Duration::from_millis(500), &text);
    text
}

#[test]
fn a_flask_event_stream_arrives_event_by_event() {
    let markers = ["event 0", "event 1", "event 2", "event 3"];
    let text = framework_stream_is_paced("streaming:create_flask()", "/sse", &markers);
    assert!(text.contains("text/event-stream"), "{text}");
}

#[test]
fn a_django_streaming_response_arrives_line_by_line() {
    let markers = ["line 0", "line 1", "line 2", "line 3"];
    framework_stream_is_paced("streaming:create_django()", "/lines/", &markers);
}
