//! Serving HTTP/1.1 to a WSGI app: keep-alive, bodies, errors.

use std::io::Read;
use std::time::Duration;

use crate::util::http::{self, Client};
use crate::util::{repo_dir, ServerBuilder};

#[test]
fn example_app_answers() {
    let server = ServerBuilder::new("hello:app")
        .chdir(&repo_dir().join("examples"))
        .start();
    let resp = http::get(server.addr(), "/").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "Hello, World!\n");
    assert_eq!(resp.header("server"), Some("ferricorn"));
    assert!(
        resp.header("date").is_some_and(|d| d.ends_with(" GMT")),
        "{:?}",
        resp.headers
    );
}

#[test]
fn three_requests_reuse_one_keep_alive_connection() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    let local = c.stream.local_addr().unwrap();
    for _ in 0..3 {
        let resp = c.get("/env").unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.header("connection"),
            None,
            "HTTP/1.1 keeps the connection by default"
        );
        // The app saw the same client port each time: one connection.
        assert!(
            resp.text()
                .contains(&format!("\"REMOTE_PORT\": \"{}\"", local.port())),
            "{}",
            resp.text()
        );
    }
}

#[test]
fn http10_closes_unless_keep_alive_is_asked() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(c.is_closed_by_server());

    let mut c = Client::connect(server.addr()).unwrap();
    for _ in 0..2 {
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let resp = c.read_response(false).unwrap();
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn many_keep_alive_clients_on_two_workers_are_all_served() {
    // A worker that blocks on one idle keep-alive connection would serve only two
    // of these and leave the rest waiting; wrk would not notice.
    let server = ServerBuilder::new("basic:app").workers(2).start();
    let mut clients: Vec<Client> = (0..64)
        .map(|_| Client::connect(server.addr()).unwrap())
        .collect();
    for round in 0..2 {
        for (i, c) in clients.iter_mut().enumerate() {
            let resp = c
                .get("/")
                .unwrap_or_else(|e| panic!("client {i} round {round}: {e}"));
            assert_eq!(resp.status, 200, "client {i} round {round}");
        }
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /nope HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(c.read_response(false).unwrap().text(), "Hello, World!\n");
    assert_eq!(c.read_response(false).unwrap().text(), "hello");
    assert_eq!(c.read_response(false).unwrap().status, 404);
}

#[test]
fn a_client_that_shuts_its_side_gets_its_answers_then_the_close() {
    // With a long keep-alive, only the client's FIN can end the connection soon.
    let server = ServerBuilder::new("basic:app")
        .args(&["--keep-alive", "60"])
        .start();
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.read_response(false).unwrap().text(), "Hello, World!\n");
    assert_eq!(c.read_response(false).unwrap().text(), "hello");
    assert!(c.is_closed_by_server());

    // The FIN after a pause, once the answer is out: still seen.
    let mut c = Client::connect(server.addr()).unwrap();
    assert_eq!(c.get("/").unwrap().status, 200);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.is_closed_by_server());
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn post_bodies_with_content_length_reach_the_app_exactly() {
    let server = ServerBuilder::new("basic:app").start();
    for len in [1, 100, 65_535, 65_537, 1 << 20, 8 << 20] {
        let body = pattern(len);
        let resp = http::post(server.addr(), "/echo", &body).unwrap();
        assert_eq!(resp.status, 200, "len {len}");
        assert_eq!(resp.body.len(), len, "len {len}");
        assert!(resp.body == body, "body of {len} bytes differs");
    }
}

#[test]
fn post_bodies_chunked_reach_the_app_exactly() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    for (len, chunk) in [
        (1usize, 1usize),
        (1000, 7),
        (300_000, 4096),
        (8 << 20, 1 << 20),
    ] {
        let body = pattern(len);
        let mut raw =
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in body.chunks(chunk) {
            raw.extend_from_slice(format!("{:x};ext=1\r\n", part.len()).as_bytes());
            raw.extend_from_slice(part);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
        c.send(&raw).unwrap();
        let resp = c.read_response(false).unwrap();
        assert_eq!(resp.status, 200, "len {len}");
        assert!(resp.body == body, "chunked body of {len} bytes differs");
    }
}

#[test]
fn expect_100_continue_gets_an_interim_response() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 100);
    c.send(b"data").unwrap();
    assert_eq!(c.read_response(false).unwrap().text(), "data");
}

#[test]
fn app_exception_gives_500_and_the_worker_keeps_serving() {
    let server = ServerBuilder::new("basic:app").start();
    let pid_before = http::get(server.addr(), "/pid").unwrap().text();
    // The traceback machinery (about 2 MiB per worker with what it imports) is
    // loaded at the first error, not before.
    let modules = http::get(server.addr(), "/modules").unwrap().text();
    for heavy in ["\"traceback\"", "\"ast\""] {
        assert!(
            !modules.contains(heavy),
            "{heavy} imported before any error: {modules}"
        );
    }
    let resp = http::get(server.addr(), "/error").unwrap();
    assert_eq!(resp.status, 500);
    server.wait_log(
        |l| l.contains("Error handling request GET /error"),
        Duration::from_secs(5),
    );
    // The whole traceback, down to the line that raised.
    server.wait_log(
        |l| l.contains("Traceback (most recent call last)"),
        Duration::from_secs(5),
    );
    server.wait_log(
        |l| l.contains("basic.py") && l.contains("in error"),
        Duration::from_secs(5),
    );
    server.wait_log(
        |l| l.contains("RuntimeError: boom from the test app"),
        Duration::from_secs(5),
    );
    let resp = http::get(server.addr(), "/").unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        http::get(server.addr(), "/pid").unwrap().text(),
        pid_before,
        "same worker, not a respawn"
    );
}

#[test]
fn head_has_no_body_and_the_get_length() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let resp = c.read_response(true).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("14"));
    // The next response starts right after the head: no body bytes were sent.
    assert_eq!(c.get("/").unwrap().text(), "Hello, World!\n");
}

#[test]
fn a_large_generator_body_is_streamed_chunked() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    let resp = c.get("/stream").unwrap();
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.body.len(), 5 * 30_001);
    // Still usable afterwards.
    assert_eq!(c.get("/").unwrap().status, 200);
}

#[test]
fn close_is_called_on_the_apps_iterable() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    assert_eq!(c.get("/closing").unwrap().text(), "closing");
    assert_eq!(c.get("/closing").unwrap().text(), "closing");
    assert_eq!(c.get("/closed-count").unwrap().text(), "2");
}

#[test]
fn a_malformed_request_gets_400_and_a_closed_connection_and_the_rest_is_never_served() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    // Content-Length with Transfer-Encoding: the classic smuggling shape.
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /error HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(resp.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "nothing after the 400: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        !server.log().contains("Error handling request GET /error"),
        "the smuggled request reached the app"
    );
    // The worker is fine.
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn environ_follows_pep_3333() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = Client::connect(server.addr()).unwrap();
    // X-Latin carries bytes past ASCII (obs-text): the app sees each byte as the
    // code point of the same number (latin-1).
    c.send(b"GET /env?a=1&b=%20 HTTP/1.1\r\nHost: example.com:8080\r\nX-Custom: one\r\nX-Custom: two\r\nX_Spoof: no\r\nContent-Type: text/x\r\nX-Latin: caf\xe9 \xff\r\n\r\n").unwrap();
    let text = c.read_response(false).unwrap().text();
    for want in [
        "\"REQUEST_METHOD\": \"GET\"",
        "\"PATH_INFO\": \"/env\"",
        "\"QUERY_STRING\": \"a=1&b=%20\"",
        "\"SCRIPT_NAME\": \"\"",
        "\"SERVER_NAME\": \"example.com\"",
        "\"SERVER_PORT\": \"8080\"",
        "\"SERVER_PROTOCOL\": \"HTTP/1.1\"",
        "\"REMOTE_ADDR\": \"127.0.0.1\"",
        "\"HTTP_X_CUSTOM\": \"one,two\"",
        "\"HTTP_X_LATIN\": \"caf\\u00e9 \\u00ff\"",
        "\"CONTENT_TYPE\": \"text/x\"",
        "\"wsgi.url_scheme\": \"http\"",
        "\"wsgi.version\": [1, 0]",
        "\"wsgi.input_terminated\": true",
    ] {
        assert!(text.contains(want), "missing {want} in {text}");
    }
    assert!(
        !text.contains("SPOOF"),
        "underscore headers are dropped: {text}"
    );
}

#[test]
fn environ_values_are_each_requests_own() {
    // A worker reuses the text of values that repeat from one request to the
    // next; each environ must still hold exactly what its own request sent.
    let server = ServerBuilder::new("basic:app").workers(1).start();
    let mut c = Client::connect(server.addr()).unwrap();
    let mut env_of = |raw: &str| {
        c.send(raw.as_bytes()).unwrap();
        c.read_response(false).unwrap().text()
    };
    let first = env_of(
        "GET /env?x=1 HTTP/1.1\r\nHost: a.example:81\r\nX-Custom: one\r\nCookie: a=1\r\n\r\n",
    );
    let second = env_of("GET /env?x=1 HTTP/1.1\r\nHost: a.example:81\r\nX-Custom: one\r\nX-Custom: two\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n");
    let third = env_of(
        "POST /env?y=2 HTTP/1.1\r\nHost: b.example\r\nX-Custom: three\r\nContent-Length: 0\r\n\r\n",
    );
    let fourth = env_of("GET /e%6ev HTTP/1.1\r\nHost: b.example\r\n\r\n");
    for (text, wants, absent) in [
        (
            &first,
            &[
                "\"HTTP_X_CUSTOM\": \"one\"",
                "\"HTTP_COOKIE\": \"a=1\"",
                "\"SERVER_NAME\": \"a.example\"",
                "\"SERVER_PORT\": \"81\"",
                "\"QUERY_STRING\": \"x=1\"",
            ][..],
            &[][..],
        ),
        (
            &second,
            &[
                "\"HTTP_X_CUSTOM\": \"one,two\"",
                "\"HTTP_COOKIE\": \"a=1; b=2\"",
                "\"REQUEST_METHOD\": \"GET\"",
            ],
            &[],
        ),
        (
            &third,
            &[
                "\"HTTP_X_CUSTOM\": \"three\"",
                "\"REQUEST_METHOD\": \"POST\"",
                "\"QUERY_STRING\": \"y=2\"",
                "\"SERVER_NAME\": \"b.example\"",
                "\"SERVER_PORT\": \"80\"",
                "\"RAW_URI\": \"/env?y=2\"",
            ],
            &["HTTP_COOKIE"],
        ),
        (
            &fourth,
            &[
                "\"PATH_INFO\": \"/env\"",
                "\"RAW_URI\": \"/e%6ev\"",
                "\"QUERY_STRING\": \"\"",
            ],
            &["HTTP_X_CUSTOM", "HTTP_COOKIE"],
        ),
    ] {
        for want in wants {
            assert!(text.contains(want), "missing {want} in {text}");
        }
        for key in absent {
            assert!(!text.contains(key), "{key} left over in {text}");
        }
    }
    // A header in the place of another of the same length.
    let one = env_of("GET /env HTTP/1.1\r\nHost: b.example\r\nX-One: 1\r\n\r\n");
    let two = env_of("GET /env HTTP/1.1\r\nHost: b.example\r\nX-Two: 2\r\n\r\n");
    assert!(one.contains("\"HTTP_X_ONE\": \"1\""), "{one}");
    assert!(
        two.contains("\"HTTP_X_TWO\": \"2\"") && !two.contains("HTTP_X_ONE"),
        "{two}"
    );
    // A value too long to be kept, then the short one before it again.
    let long = "q".repeat(300);
    for query in ["x=1", long.as_str(), "x=1"] {
        let text = env_of(&format!(
            "GET /env?{query} HTTP/1.1\r\nHost: b.example\r\n\r\n"
        ));
        let want = format!("\"QUERY_STRING\": \"{query}\"");
        assert!(text.contains(&want), "missing {want} in {text}");
    }
    // Another connection, with its own client port.
    for _ in 0..2 {
        let mut other = Client::connect(server.addr()).unwrap();
        let port = other.stream.local_addr().unwrap().port();
        let text = other.get("/env").unwrap().text();
        assert!(
            text.contains(&format!("\"REMOTE_PORT\": \"{port}\"")),
            "{port}: {text}"
        );
    }
}

#[test]
fn ipv6_and_several_binds() {
    let server = ServerBuilder::new("basic:app")
        .args(&["-b", "[::1]:0", "-b", "127.0.0.1:0"])
        .no_default_bind()
        .start();
    let log = server.log();
    let v6 = log
        .lines()
        .find_map(|l| {
            l.split("Listening at: http://")
                .nth(1)
                .filter(|a| a.starts_with('['))
        })
        .expect("an IPv6 listener");
    let v6: std::net::SocketAddr = v6.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(http::get(v6, "/").unwrap().status, 200);
    let env = http::get(v6, "/env").unwrap().text();
    assert!(env.contains("\"REMOTE_ADDR\": \"::1\""), "{env}");
    assert_eq!(
        http::get(server.addr(), "/").unwrap().status,
        200,
        "the IPv4 listener serves too"
    );
}
