//! A real framework on ferricorn: Flask (from the test venv).

use crate::util::http::{self, Client};
use crate::util::ServerBuilder;

use crate::util::test_venv as venv;

#[test]
fn flask_routes_json_uploads_streams_and_files() {
    let venv = venv();
    assert!(
        venv.join("bin/python").exists(),
        "no test venv at {}: run ./scripts/test",
        venv.display()
    );
    let server = ServerBuilder::new("flaskapp:create_app()")
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .env("FORWARDED_ALLOW_IPS", "*")
        .start();
    let mut c = Client::connect(server.addr()).unwrap();
    assert_eq!(c.get("/").unwrap().text(), "flask ok");

    // Routing, query string, and https URLs behind a trusted proxy.
    c.send(b"GET /user/ada?q=caf%C3%A9 HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-Proto: https\r\n\r\n").unwrap();
    let text = c.read_response(false).unwrap().text();
    assert!(
        text.contains("\"name\":\"ada\"") && text.contains("\"q\":\"caf\\u00e9\""),
        "{text}"
    );
    assert!(
        text.contains("\"url\":\"https://example.com/user/ada\""),
        "{text}"
    );

    // JSON in and out.
    let body = br#"{"items": [1, 2, 3]}"#;
    let mut raw = format!("POST /json HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    raw.extend_from_slice(body);
    c.send(&raw).unwrap();
    let text = c.read_response(false).unwrap().text();
    assert!(text.contains("\"n\":3"), "{text}");

    // A multipart upload of 300 KB of every byte value.
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    let boundary = "ferricornBoundary";
    let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
    form.extend_from_slice(&blob);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut raw = format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n", form.len()).into_bytes();
    raw.extend_from_slice(&form);
    c.send(&raw).unwrap();
    let text = c.read_response(false).unwrap().text();
    let sum = blob.iter().map(|&b| u64::from(b)).sum::<u64>() % 65536;
    assert!(
        text.contains("\"filename\":\"data.bin\"")
            && text.contains("\"size\":300000")
            && text.contains("\"field\":\"hello\""),
        "{text}"
    );
    assert!(text.contains(&format!("\"sum\":{sum}")), "{text}");

    // A generator response, and send_file.
    assert_eq!(
        c.get("/stream").unwrap().text(),
        "part 0\npart 1\npart 2\npart 3\n"
    );
    let file = c.get("/file").unwrap();
    assert_eq!(file.body.len(), 100_000);
    assert!(
        file.header("content-disposition")
            .is_some_and(|d| d.contains("x.bin")),
        "{:?}",
        file.headers
    );
    assert_eq!(http::get(server.addr(), "/nope").unwrap().status, 404);
}
