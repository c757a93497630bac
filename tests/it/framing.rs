//! Strict HTTP/1.1 framing (RFC 9112) on the real binary: every ambiguous or
//! malformed request gets its status and a closed connection, and the bytes after
//! it — here always a smuggled `GET /smuggled` — never reach the app.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::util::{http, ServerBuilder};

const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

/// Send `raw` followed by a smuggled request; return (status line, closed?).
fn send(addr: std::net::SocketAddr, raw: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = raw.to_vec();
    bytes.extend_from_slice(SMUGGLED);
    let _ = s.write_all(&bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset after the response also means closed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got).into_owned();
    (text.lines().next().unwrap_or_default().to_string(), closed)
}

#[test]
fn every_framing_rule_answers_closes_and_never_passes_the_rest_on() {
    let server = ServerBuilder::new("recorder:app").start();
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(5000));
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        (0..101)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("TE and CL together", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), "400"),
        ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_vec(), "501"),
        ("TE with junk bytes", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x85chunked\r\n\r\n0\r\n\r\n".to_vec(), "400"),
        ("TE identity", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n".to_vec(), "501"),
        // Two lines are one list of two codings, as on one line.
        ("two TE lines", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), "501"),
        ("TE gzip and chunked on two lines", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), "501"),
        ("duplicate CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc".to_vec(), "400"),
        ("CL with a sign", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc".to_vec(), "400"),
        ("CL list", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc".to_vec(), "400"),
        ("CL not digits", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3a\r\n\r\nabc".to_vec(), "400"),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n".to_vec(), "400"),
        ("chunk data without CRLF", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n".to_vec(), "400"),
        ("bad chunk extension", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;=x\r\nabc\r\n0\r\n\r\n".to_vec(), "400"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: one\r\n two\r\n\r\n".to_vec(), "400"),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n".to_vec(), "400"),
        ("bad name token", b"GET / HTTP/1.1\r\nHost: t\r\nX(A): v\r\n\r\n".to_vec(), "400"),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n".to_vec(), "400"),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: t\rX-A: b\r\n\r\n".to_vec(), "400"),
        ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n".to_vec(), "400"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), "400"),
        ("Host with a space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(), "400"),
        ("Host with a slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n".to_vec(), "400"),
        ("Host with an unclosed bracket", b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n".to_vec(), "400"),
        ("Host as a list", b"GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n".to_vec(), "400"),
        ("HTTP/3.0", b"GET / HTTP/3.0\r\nHost: t\r\n\r\n".to_vec(), "505"),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), "505"),
        ("request line too long", long_line.into_bytes(), "414"),
        ("too many headers", many_headers.into_bytes(), "431"),
    ];
    for (name, raw, status) in &cases {
        let (line, closed) = send(server.addr(), raw);
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: got {line:?}"
        );
        assert!(
            closed,
            "{name}: the connection must be closed after the error"
        );
    }
    // A well-formed pipelined pair is served in full, so the recorder works...
    let (line, _) = send(
        server.addr(),
        b"GET /first HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    server.wait_log(|l| l.contains("app saw GET /first"), Duration::from_secs(5));
    // ...and not one smuggled request reached the app, nor did any of the bad ones.
    assert!(
        !server.log().contains("app saw GET /smuggled"),
        "{}",
        server.log()
    );
    assert_eq!(
        server.log().matches("app saw").count(),
        1,
        "{}",
        server.log()
    );
    // The worker is fine.
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn response_rules_hold_whatever_the_app_yields() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = http::Client::connect(server.addr()).unwrap();
    // CR LF in a header value from the app: 500, and nothing of it on the wire.
    let resp = c.get("/inject").unwrap();
    assert_eq!(resp.status, 500);
    assert!(
        resp.header("set-cookie").is_none() && resp.header("x-evil").is_none(),
        "{:?}",
        resp.headers
    );
    server.wait_log(|l| l.contains("control character"), Duration::from_secs(5));
    // 204 carries no body even when the app yields one; the connection stays usable.
    let mut c = http::Client::connect(server.addr()).unwrap();
    let resp = c.get("/nocontent").unwrap();
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("content-length"), None, "{:?}", resp.headers);
    assert_eq!(
        c.get("/").unwrap().text(),
        "Hello, World!\n",
        "no stray body bytes before the next response"
    );
}

#[test]
fn proxy_protocol_v1_and_v2_set_the_client_address_for_allowed_peers() {
    let remote = |server: &crate::util::Server, prefix: &[u8]| -> (String, String) {
        let mut c = http::Client::connect(server.addr()).unwrap();
        let mut raw = prefix.to_vec();
        raw.extend_from_slice(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n");
        c.send(&raw).unwrap();
        let resp = c.read_response(false).unwrap();
        let text = resp.text();
        let field = |k: &str| {
            text.split(&format!("\"{k}\": \""))
                .nth(1)
                .map(|s| s.split('"').next().unwrap().to_string())
                .unwrap_or_default()
        };
        (
            resp.status.to_string(),
            format!("{}:{}", field("REMOTE_ADDR"), field("REMOTE_PORT")),
        )
    };
    let server = ServerBuilder::new("basic:app")
        .args(&["--proxy-protocol"])
        .start();
    assert_eq!(
        remote(&server, b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 443\r\n"),
        ("200".into(), "203.0.113.9:40000".into())
    );
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x21, 0, 36]);
    v2.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&[0u8; 16]);
    v2.extend_from_slice(&[0x1f, 0x90, 0x01, 0xbb]);
    assert_eq!(
        remote(&server, &v2),
        ("200".into(), "2001:db8::7:8080".into())
    );
    // Without a header the connection's own peer stands; a bad one is 400.
    assert_eq!(
        remote(&server, b"").1.split(':').next().unwrap(),
        "127.0.0.1"
    );
    let (line, closed) = send(server.addr(), b"PROXY TCP4 1.2.3.4 nonsense 1 2\r\n");
    assert!(line.starts_with("HTTP/1.1 400") && closed, "{line}");

    // From a peer not in --proxy-allow-from, a PROXY header is refused (403).
    let strict = ServerBuilder::new("basic:app")
        .args(&["--proxy-protocol", "v1", "--proxy-allow-from", "10.0.0.0/8"])
        .start();
    let (line, closed) = send(
        strict.addr(),
        b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 443\r\n",
    );
    assert!(line.starts_with("HTTP/1.1 403") && closed, "{line}");
}

#[test]
fn behind_a_proxy_protocol_proxy_forwarded_headers_are_trusted_by_who_connected() {
    // The proxy (127.0.0.1) is in --forwarded-allow-ips; the clients it speaks
    // for are not, whatever address a PROXY header claims for them.
    let server = ServerBuilder::new("basic:app")
        .args(&[
            "--proxy-protocol",
            "--proxy-allow-from",
            "127.0.0.0/8",
            "--forwarded-allow-ips",
            "127.0.0.1",
        ])
        .start();
    let scheme = |from: &str, proxy_line: &str| -> String {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(
            &format!("{from}:0")
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        sock.connect(&server.addr().into()).unwrap();
        let mut c = http::Client::from_stream(sock.into()).unwrap();
        let raw =
            format!("{proxy_line}GET /env HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\n\r\n");
        c.send(raw.as_bytes()).unwrap();
        let text = c.read_response(false).unwrap().text();
        text.split("\"wsgi.url_scheme\": \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    // The trusted proxy's X-Forwarded-Proto holds, for a client it names.
    assert_eq!(
        scheme(
            "127.0.0.1",
            "PROXY TCP4 203.0.113.9 127.0.0.1 40000 443\r\n"
        ),
        "https"
    );
    // A peer that is not trusted gains nothing by claiming a trusted address.
    assert_eq!(
        scheme("127.0.0.2", "PROXY TCP4 127.0.0.1 127.0.0.1 40000 443\r\n"),
        "http"
    );
}

#[test]
fn a_request_line_that_cannot_be_http_1_gets_its_400_at_once_not_at_the_header_timeout() {
    let server = ServerBuilder::new("basic:app").start();
    for (what, raw, status) in [
        ("HTTP/0.9", &b"GET /\r\n"[..], "400"),
        (
            "a TLS ClientHello",
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            "400",
        ),
        (
            "a PROXY line, the protocol off",
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"[..],
            "400",
        ),
        (
            "the HTTP/2 preface's first line",
            &b"PRI * HTTP/2.0\r\n"[..],
            "505",
        ),
    ] {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let sent = std::time::Instant::now();
        s.write_all(raw).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {text:?}"
        );
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{what}: {:?}",
            sent.elapsed()
        );
    }
}

#[test]
fn obs_fold_is_accepted_only_with_permit_obsolete_folding() {
    let raw = b"GET /env HTTP/1.1\r\nHost: t\r\nX-Folded: one\r\n two\r\nX-After: yes\r\n\r\n";
    let strict = ServerBuilder::new("basic:app").start();
    let mut c = http::Client::connect(strict.addr()).unwrap();
    c.send(raw).unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 400);
    let permissive = ServerBuilder::new("basic:app")
        .arg("--permit-obsolete-folding")
        .start();
    let mut c = http::Client::connect(permissive.addr()).unwrap();
    c.send(raw).unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.status, 200);
    let env = resp.text();
    assert!(env.contains(r#""HTTP_X_FOLDED": "one   two""#), "{env}");
    assert!(env.contains(r#""HTTP_X_AFTER": "yes""#), "{env}");
    // The connection goes on: the fold did not shift where the next request starts.
    assert_eq!(c.get("/").unwrap().status, 200);
}

/// RFC 9112 §3.2.2: an absolute-form target's authority is the host the app
/// sees, whatever Host says; RFC 9110 §2.5: HTTP/1.2 is served as 1.1.
#[test]
fn the_targets_authority_is_the_host_and_a_later_minor_version_is_served_as_1_1() {
    let server = ServerBuilder::new("basic:app").start();
    let mut c = http::Client::connect(server.addr()).unwrap();
    c.send(b"GET http://good.example:8080/env?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
        .unwrap();
    let seen = c.read_response(false).unwrap().text();
    for want in [
        "\"HTTP_HOST\": \"good.example:8080\"",
        "\"SERVER_NAME\": \"good.example\"",
        "\"SERVER_PORT\": \"8080\"",
        "\"PATH_INFO\": \"/env\"",
        "\"QUERY_STRING\": \"x=1\"",
    ] {
        assert!(seen.contains(want), "{want} in {seen}");
    }

    c.send(b"GET /env HTTP/1.2\r\nHost: t\r\n\r\n").unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        resp.text().contains("\"SERVER_PROTOCOL\": \"HTTP/1.1\""),
        "{}",
        resp.text()
    );
    // Served as 1.1: the connection stays open for the next request.
    assert_eq!(c.get("/").unwrap().status, 200);
}
