//! PEP 3333 as Python itself checks it (`wsgiref.validate`), on the real server.

use std::time::Duration;

use crate::util::http::{self, Client};
use crate::util::ServerBuilder;

#[test]
fn wsgiref_validate_finds_nothing_to_complain_about() {
    validate_with(&[]);
}

#[test]
fn wsgiref_validate_is_content_with_streamed_bodies_too() {
    validate_with(&["--body-buffer-size", "0"]);
}

fn validate_with(args: &[&str]) {
    let server = ServerBuilder::new("validated:app").args(args).start();
    let mut c = Client::connect(server.addr()).unwrap();
    for path in ["/", "/pid", "/env", "/stream", "/closing", "/osenv?PATH"] {
        let resp = c.get(path).unwrap();
        assert_eq!(
            resp.status,
            200,
            "{path}: {}\nlog:\n{}",
            resp.text(),
            server.log()
        );
    }
    // POST bodies through wsgi.input, Content-Length and chunked.
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    assert_eq!(c.read_response(false).unwrap().text(), "hello");
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").unwrap();
    assert_eq!(c.read_response(false).unwrap().text(), "abc");
    // HEAD and HTTP/1.0 too.
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(c.read_response(true).unwrap().status, 200);
    let mut old = Client::connect(server.addr()).unwrap();
    old.send(b"GET /env HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(old.read_response(false).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(100)); // let any late warning reach the log (bounded)
    let log = server.log();
    assert!(
        !log.contains("Traceback") && !log.contains("Warning") && !log.contains("AssertionError"),
        "{log}"
    );
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn protocol_mistakes_by_the_app_are_500s_with_a_clear_line() {
    let server = ServerBuilder::new("basic:app").start();
    for (path, line) in [
        (
            "/hop",
            "the app set the hop-by-hop header \"Transfer-Encoding\"",
        ),
        ("/none", "'NoneType' object is not iterable"),
        ("/str", "the app's response iterable yielded str, not bytes"),
    ] {
        let resp = http::get(server.addr(), path).unwrap();
        assert_eq!(resp.status, 500, "{path}");
        server.wait_log(|l| l.contains(line), Duration::from_secs(5));
    }
    assert_eq!(
        http::get(server.addr(), "/").unwrap().status,
        200,
        "the worker keeps serving"
    );
}

#[test]
fn start_response_called_again_follows_pep_3333() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    for _ in 0..2 {
        // With exc_info and valid headers, the second call replaces the first.
        let replaced = c.get("/exc-info").unwrap();
        assert_eq!(replaced.status, 500);
        assert_eq!(replaced.header("x-second"), Some("2"));
        assert_eq!(replaced.header("x-first"), None);
        assert_eq!(replaced.text(), "RuntimeError ValueError");
        // A call that raises (a bad header) leaves the earlier status and headers.
        let kept = c.get("/exc-info?keep").unwrap();
        assert_eq!(kept.status, 200);
        assert_eq!(kept.header("x-first"), Some("1"));
        assert_eq!(kept.header("x-bad"), None);
        assert_eq!(kept.text(), "RuntimeError ValueError");
    }
}

#[test]
fn system_exit_from_the_app_ends_the_worker_cleanly_and_it_is_replaced() {
    let server = ServerBuilder::new("basic:app").start();
    let pid = crate::util::worker_pid(server.addr());
    assert_eq!(http::get(server.addr(), "/exit").unwrap().status, 500);
    server.wait_log(
        |l| {
            l.contains(
                "GET /exit: the app raised SystemExit: 0; this worker stops and will be replaced",
            )
        },
        Duration::from_secs(5),
    );
    server.wait_log(
        |l| {
            l.contains(&format!(
                "(pid: {pid}) exited with code 0; starting a new one"
            ))
        },
        Duration::from_secs(10),
    );
    server.wait_log_count(|l| l.contains(") ready"), 2, Duration::from_secs(10));
    assert_ne!(crate::util::worker_pid(server.addr()), pid);
}

#[test]
fn file_wrapper_sends_regular_files_with_offsets_and_limits_and_iterates_the_rest() {
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for args in [&[][..], &["--no-sendfile"][..]] {
        let server = ServerBuilder::new("basic:app").args(args).start();
        let mut c = Client::connect(server.addr()).unwrap();
        let whole = c.get("/file?0").unwrap();
        if args.is_empty() {
            // Sent by sendfile, with its length known up front.
            assert_eq!(whole.header("content-length"), Some("300000"));
        }
        assert!(whole.body == content, "{args:?}: the whole file");
        let tail = c.get("/file?1000").unwrap();
        assert!(
            tail.body == content[1000..],
            "{args:?}: from the file's position"
        );
        let part = c.get("/file?10,500").unwrap();
        assert!(
            part.body == content[10..510],
            "{args:?}: no more than the app's Content-Length"
        );
        // Iterated, the file yields more than its Content-Length: the excess is
        // dropped and that connection closed (sendfile sends exactly the length).
        let mut c = Client::connect(server.addr()).unwrap();
        // HEAD: the length, no body, and the connection still in step.
        c.send(b"HEAD /file?0 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(
            c.read_response(true).unwrap().header("content-length"),
            Some("300000")
        );
        assert_eq!(c.get("/filelike").unwrap().body.len(), 15_000, "{args:?}");
        assert_eq!(c.get("/").unwrap().status, 200);
    }
}

#[test]
fn what_the_app_keeps_of_a_request_is_never_handed_to_another() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    for _ in 0..3 {
        // Requests in between, whose start_response may be recycled.
        assert_eq!(c.get("/").unwrap().status, 200);
        assert_eq!(c.get("/keep-start-response").unwrap().text(), "fresh");
    }
    // A wsgi.input the app keeps still reads its own request's body.
    for (body, answer) in [
        ("one", "fresh -"),
        ("two", "fresh one"),
        ("three", "fresh two"),
    ] {
        assert_eq!(c.get("/").unwrap().status, 200);
        let raw = format!(
            "POST /keep-input HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.send(raw.as_bytes()).unwrap();
        assert_eq!(c.read_response(false).unwrap().text(), answer);
    }
    // start_response's object and its write() refer to each other; the
    // collector must see the cycle, or an object let go whole would leak.
    assert_eq!(c.get("/start-response-gc").unwrap().text(), "tracked");
    // Nor is one whose write() the app keeps.
    for _ in 0..3 {
        assert_eq!(c.get("/").unwrap().status, 200);
        assert_eq!(c.get("/keep-write").unwrap().text(), "fresh");
    }
}
