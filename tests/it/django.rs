//! A real framework on ferricorn: a minimal Django project (from the test venv).

use crate::util::http::Client;
use crate::util::ServerBuilder;

#[test]
fn django_view_csrf_form_redirect_and_stream() {
    let venv = crate::util::test_venv();
    assert!(
        venv.join("bin/python").exists(),
        "no test venv at {}: run ./scripts/test",
        venv.display()
    );
    let server = ServerBuilder::new("djangoapp")
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .start();
    let mut c = Client::connect(server.addr()).unwrap();
    assert_eq!(c.get("/hello/").unwrap().text(), "django ok GET /hello/");

    // CSRF: the GET sets the cookie and returns the token; the POST sends both back.
    let resp = c.get("/form/").unwrap();
    let token = resp.text();
    let cookie = resp
        .header("set-cookie")
        .expect("a csrftoken cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body = format!("name=ada&csrfmiddlewaretoken={token}");
    let raw = format!(
        "POST /form/ HTTP/1.1\r\nHost: t\r\nCookie: {cookie}\r\nReferer: http://t/form/\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.send(raw.as_bytes()).unwrap();
    let resp = c.read_response(false).unwrap();
    assert_eq!((resp.status, resp.text()), (200, "posted ada".to_string()));
    // Without the token, Django's CSRF check refuses (403): the body reached it intact either way.
    let raw = "POST /form/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\nname=ada";
    c.send(raw.as_bytes()).unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 403);

    let resp = c.get("/go/").unwrap();
    assert_eq!(
        (resp.status, resp.header("location")),
        (302, Some("/hello/"))
    );
    assert_eq!(
        c.get("/stream/").unwrap().text(),
        "chunk 0\nchunk 1\nchunk 2\n"
    );
    // Django's APPEND_SLASH redirect is a real redirect too.
    assert_eq!(c.get("/hello").unwrap().status, 301);
}
