//! gunicorn's request fixtures (a copy in `tests/corpus/gunicorn-requests`, see its
//! README) run through `parse_head` and `ChunkedDecoder`.
//!
//! Expectations come from the fixtures' `.py` files via `corpus_expect.py`
//! (run with `python3`). Every fixture is fed whole, byte by byte, split at
//! every offset and in seeded random pieces, and must give the same outcome.
//!
//! Skipped fixtures (decided from their `cfg.set` calls, see `limits_for`;
//! the exact list is asserted in `corpus` so it cannot drift silently):
//! - `pp_*` (valid and invalid): PROXY protocol is not this crate's job.
//! - valid `028` (strip_header_spaces), `031compat`, `031compat2`
//!   (permit_unconventional_http_method), `compat_obs_fold`,
//!   `compat_obs_fold_huge` (permit_obsolete_folding): they need a looser
//!   parser than ours, which has no such switches.
//! - valid `040_compat` (header_map="dangerous"): a WSGI-layer setting.
//! - invalid `019` (forwarded_allow_ips, X-Forwarded-* scheme checks),
//!   `040` and `chunked_07` (header_map="refuse"): they only fail under a
//!   WSGI-layer setting; under defaults gunicorn accepts them too.
//!
//! Limits settings (`limit_request_line`, `limit_request_field_size`,
//! `limit_request_fields`) are mapped onto `Limits` instead of skipped, and
//! loosening settings are ignored for invalid fixtures (a request refused by
//! a looser parser is refused by a stricter one too).
//!
//! HTTP/1.1 fixtures without Host: RFC 9112 §3.2 makes that a 400, which we
//! check, then insert `Host: injected.invalid` after the request line and
//! check everything else (the injected field is left out of the comparison).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{chunkings, run, Outcome, Request};
use ferricorn_http::{Framing, HttpError, Limits};

const MISSING_HOST: HttpError = HttpError::BadRequest("missing or duplicate Host");
const INJECTED_HOST: &[u8] = b"Host: injected.invalid\r\n";

/// Valid fixtures our strict rules refuse on purpose, with the refusal.
/// gunicorn accepts these; a front proxy might read them differently.
const DELIBERATELY_REJECTED: &[(&str, HttpError)] = &[
    // Transfer-Encoding: identity next to Content-Length (RFC 9112 §6.1).
    (
        "009",
        HttpError::BadRequest("both Transfer-Encoding and Content-Length"),
    ),
    // Two Transfer-Encoding lines (gzip, then chunked; identity, then chunked):
    // one list of two codings, judged as "gzip,chunked" on one line is.
    ("025", HttpError::NotImplemented),
    // "gzip,chunked": we decode no coding but chunked.
    ("025_line", HttpError::NotImplemented),
    ("029", HttpError::NotImplemented),
    ("030", HttpError::NotImplemented),
    // "gzip, chunked" and "identity, chunked": only a lone chunked is accepted.
    ("rfc9112_smuggle_gzip_chunked_01", HttpError::NotImplemented),
    (
        "rfc9112_smuggle_te_identity_chunked_01",
        HttpError::NotImplemented,
    ),
];

/// Invalid fixtures we accept on purpose, with why.
const DELIBERATELY_ACCEPTED: &[(&str, &str)] = &[(
    "003c",
    "method \"-bl\": gunicorn wants 3-20 upper-case chars, RFC 9110 §9.1 allows any token",
)];

/// Invalid fixtures that are truncated streams, not bad bytes: the head
/// (`001`, NoMoreData) or the chunked body (`..._missing_final_crlf_01`,
/// ChunkMissingTerminator: "0\r\n" then EOF) is simply not finished, so
/// the right answer is "need more", and EOF there is the worker's error.
const TRUNCATED: &[&str] = &["001", "rfc9112_chunked_missing_final_crlf_01"];

/// Fixtures skipped because they need a setting we do not have (see top).
const SKIPPED: &[&str] = &[
    "invalid/019",
    "invalid/040",
    "invalid/chunked_07",
    "invalid/pp_01",
    "invalid/pp_02",
    "invalid/pp_03",
    "valid/028",
    "valid/031compat",
    "valid/031compat2",
    "valid/040_compat",
    "valid/compat_obs_fold",
    "valid/compat_obs_fold_huge",
    "valid/pp_01",
    "valid/pp_02",
    "valid/pp_03",
    "valid/pp_04",
    "valid/pp_05",
];

#[derive(Debug, Default)]
struct Fixture {
    kind: String,
    name: String,
    cfg: Vec<(String, String)>,
    error: Option<String>,
    requests: Vec<Expected>,
}

#[derive(Debug, Default)]
struct Expected {
    method: Vec<u8>,
    uri: Vec<u8>,
    version: (u8, u8),
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    trailers: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

fn corpus_dir() -> PathBuf {
    // A copy kept in the repo (its README has the source commit and the MIT licence).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/gunicorn-requests");
    assert!(
        dir.join("valid").is_dir() && dir.join("invalid").is_dir(),
        "gunicorn request corpus not found at {}; this test fails rather than skips",
        dir.display()
    );
    dir
}

fn unhex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn load_expectations(dir: &Path) -> Vec<Fixture> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus_expect.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
        .expect("python3 is needed to read the fixture expectations");
    assert!(
        output.status.success(),
        "corpus_expect.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut fixtures: Vec<Fixture> = Vec::new();
    let mut ended = false;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let fixture = fixtures.last_mut();
        match f[0] {
            "FIXTURE" => fixtures.push(Fixture {
                kind: f[1].to_string(),
                name: f[2].to_string(),
                ..Fixture::default()
            }),
            "CFG" => fixture
                .unwrap()
                .cfg
                .push((f[1].to_string(), String::from_utf8(unhex(f[2])).unwrap())),
            "ERROR" => fixture.unwrap().error = Some(f[1].to_string()),
            "REQ" => fixture.unwrap().requests.push(Expected::default()),
            "END" => ended = true,
            _ => {
                let req = fixture.unwrap().requests.last_mut().unwrap();
                match f[0] {
                    "METHOD" => req.method = unhex(f[1]),
                    "URI" => req.uri = unhex(f[1]),
                    "VERSION" => req.version = (f[1].parse().unwrap(), f[2].parse().unwrap()),
                    "HEADER" => req.headers.push((unhex(f[1]), unhex(f[2]))),
                    "BODY" => req.body = unhex(f[1]),
                    "TRAILERS" => req.trailers = Some(Vec::new()),
                    "TRAILER" => req
                        .trailers
                        .as_mut()
                        .unwrap()
                        .push((unhex(f[1]), unhex(f[2]))),
                    other => panic!("unexpected line kind {other:?}"),
                }
            }
        }
    }
    assert!(ended, "corpus_expect.py output is truncated");
    fixtures
}

/// Decode a fixture `.http` file (README "`.http` file format").
fn decode_http(raw: &[u8]) -> Vec<u8> {
    let s: Vec<u8> = raw.iter().copied().filter(|&b| b != b'\n').collect();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let rest = &s[i..];
        if rest.starts_with(b"\\r\\n") {
            out.extend_from_slice(b"\r\n");
            i += 4;
        } else if rest.starts_with(b"\\0") {
            out.push(0);
            i += 2;
        } else if rest.starts_with(b"\\n") {
            out.push(b'\n');
            i += 2;
        } else if rest.starts_with(b"\\t") {
            out.push(b'\t');
            i += 2;
        } else if rest.starts_with(b"\\x") && rest.len() >= 4 {
            let hex = std::str::from_utf8(&rest[2..4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).expect("bad \\x escape"));
            i += 4;
        } else {
            panic!("stray backslash in fixture at byte {i}");
        }
    }
    out
}

/// Map a fixture's settings onto `Limits`, or say why it is skipped.
fn limits_for(fixture: &Fixture) -> Result<Limits, String> {
    if fixture.name.starts_with("pp_") {
        return Err("PROXY protocol".into());
    }
    let mut limits = Limits::default();
    for (name, value) in &fixture.cfg {
        let number = || value.parse::<usize>().unwrap();
        match name.as_str() {
            // gunicorn: 0 means unlimited for the request line.
            "limit_request_line" if number() == 0 => limits.max_request_line = usize::MAX,
            "limit_request_line" => limits.max_request_line = number(),
            // gunicorn: 0 means the default for the field size.
            "limit_request_field_size" if number() == 0 => {}
            "limit_request_field_size" => limits.max_field_size = number(),
            "limit_request_fields" => limits.max_headers = number(),
            // These only loosen gunicorn's parser; a request it refuses
            // even so is one a stricter parser refuses too.
            name if LOOSENING.contains(&name) && fixture.kind == "invalid" => {}
            _ => return Err(format!("needs {name}={value}")),
        }
    }
    Ok(limits)
}

/// gunicorn settings that only make its parser accept more.
const LOOSENING: &[&str] = &[
    "permit_obsolete_folding",
    "strip_header_spaces",
    "permit_unconventional_http_method",
    "casefold_http_method",
];

fn has_host_line(stream: &[u8]) -> bool {
    let end = stream
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(stream.len());
    stream[..end]
        .split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"host:"))
}

/// Insert a Host line into each HTTP/1.1 request refused only for lacking
/// one. Returns the new stream and how many were inserted.
fn with_hosts(data: &[u8], limits: &Limits) -> (Vec<u8>, usize) {
    let mut data = data.to_vec();
    let mut injected = 0;
    loop {
        match run(&data, limits, &[]).error {
            Some((at, MISSING_HOST)) if !has_host_line(&data[at..]) => {
                let mut q = at;
                while data[q..].starts_with(b"\r\n") {
                    q += 2;
                }
                let eol = q + data[q..].windows(2).position(|w| w == b"\r\n").unwrap() + 2;
                data.splice(eol..eol, INJECTED_HOST.iter().copied());
                injected += 1;
            }
            _ => return (data, injected),
        }
    }
}

fn upper(name: &[u8]) -> Vec<u8> {
    name.to_ascii_uppercase()
}

fn check_request(what: &str, got: &Request, want: &Expected) {
    assert_eq!(got.method, want.method, "{what}: method");
    assert_eq!(got.target, want.uri, "{what}: raw target");
    assert_eq!((1, got.minor_version), want.version, "{what}: version");
    // gunicorn's default header_map="drop" drops names with "_"; we keep
    // them (the WSGI layer drops them), so compare without them.
    let got_headers: Vec<(Vec<u8>, Vec<u8>)> = got
        .headers
        .iter()
        .filter(|(n, v)| !(n == b"Host" && v == b"injected.invalid"))
        .filter(|(n, _)| !n.contains(&b'_'))
        .map(|(n, v)| (upper(n), v.clone()))
        .collect();
    assert_eq!(got_headers, want.headers, "{what}: headers");
    assert_eq!(got.body, want.body, "{what}: body");
    let got_trailers: Vec<(Vec<u8>, Vec<u8>)> = got
        .trailers
        .iter()
        .map(|(n, v)| (upper(n), v.clone()))
        .collect();
    assert_eq!(
        got_trailers,
        want.trailers.clone().unwrap_or_default(),
        "{what}: trailers"
    );
}

/// The same outcome for every way of splitting the stream.
fn check_chunkings(what: &str, data: &[u8], limits: &Limits, whole: &Outcome) {
    for (how, cuts) in chunkings(data.len(), data.len() as u64) {
        let got = run(data, limits, &cuts);
        assert!(
            got == *whole,
            "{what}: fed {how}: {got:?}\n  whole: {whole:?}"
        );
    }
}

#[test]
fn corpus() {
    let dir = corpus_dir();
    let fixtures = load_expectations(&dir);
    let rejected: BTreeMap<&str, HttpError> = DELIBERATELY_REJECTED.iter().copied().collect();
    let accepted: BTreeMap<&str, &str> = DELIBERATELY_ACCEPTED.iter().copied().collect();
    let mut skipped = Vec::new();
    let (mut valid_checked, mut invalid_checked, mut host_injected) = (0, 0, 0);
    let mut report = Vec::new();

    for fixture in &fixtures {
        let what = format!("{}/{}", fixture.kind, fixture.name);
        let limits = match limits_for(fixture) {
            Ok(limits) => limits,
            Err(why) => {
                skipped.push((what, why));
                continue;
            }
        };
        let raw = std::fs::read(
            dir.join(&fixture.kind)
                .join(format!("{}.http", fixture.name)),
        )
        .unwrap();
        let original = decode_http(&raw);
        let (data, injected) = with_hosts(&original, &limits);
        if injected > 0 {
            // The un-injected stream was refused for the missing Host.
            let first = run(&original, &limits, &[]);
            assert_eq!(first.error.map(|e| e.1), Some(MISSING_HOST), "{what}");
            host_injected += 1;
        }
        let whole = run(&data, &limits, &[]);

        if fixture.kind == "valid" {
            valid_checked += 1;
            if let Some(&want) = rejected.get(fixture.name.as_str()) {
                assert_eq!(
                    whole.error.map(|e| e.1),
                    Some(want),
                    "{what}: deliberately rejected"
                );
                report.push(format!(
                    "{what}: valid in gunicorn, rejected here with {want:?}"
                ));
            } else {
                assert_eq!(whole.error, None, "{what}");
                let mut got_requests = whole.requests.clone();
                if whole.partial {
                    // valid/099 declares Content-Length: 17914 but carries
                    // 8599 body bytes; gunicorn's expectation is the bytes
                    // present at EOF. Only a Content-Length body may be cut.
                    let req = whole
                        .in_progress
                        .clone()
                        .expect("partial head in a valid fixture");
                    assert!(matches!(req.framing, Framing::Length(_)), "{what}: {req:?}");
                    report.push(format!(
                        "{what}: body shorter than Content-Length; compared the bytes present"
                    ));
                    got_requests.push(req);
                }
                assert_eq!(
                    got_requests.len(),
                    fixture.requests.len(),
                    "{what}: request count"
                );
                for (i, (got, want)) in got_requests.iter().zip(&fixture.requests).enumerate() {
                    check_request(&format!("{what} request {i}"), got, want);
                }
            }
        } else {
            invalid_checked += 1;
            let expected = fixture.error.as_deref().unwrap();
            if let Some(why) = accepted.get(fixture.name.as_str()) {
                assert_eq!(whole.error, None, "{what}: deliberately accepted");
                report.push(format!(
                    "{what}: {expected} in gunicorn, accepted here: {why}"
                ));
            } else if TRUNCATED.contains(&fixture.name.as_str()) {
                // The stream stops mid-request: we are still waiting for
                // bytes, and the worker treats EOF there as an error.
                assert_eq!(whole.error, None, "{what}");
                assert!(whole.partial, "{what}: should still be partial");
                report.push(format!(
                    "{what}: {expected} in gunicorn, still Partial here at EOF"
                ));
            } else {
                let err = whole.error.map(|e| e.1);
                let err =
                    err.unwrap_or_else(|| panic!("{what} ({expected}) was accepted: {whole:?}"));
                // Limit fixtures must hit the matching limit status (unless a
                // loosening setting we ignore let gunicorn get that far,
                // like invalid/013's obs-fold, refused here first).
                let loosened = fixture
                    .cfg
                    .iter()
                    .any(|(n, _)| LOOSENING.contains(&n.as_str()));
                match expected {
                    _ if loosened => {}
                    "LimitRequestHeaders" => assert_eq!(err, HttpError::HeadersTooLarge, "{what}"),
                    "LimitRequestLine" => assert_eq!(err, HttpError::UriTooLong, "{what}"),
                    _ => {}
                }
                report.push(format!("{what}: {expected} -> {err:?}"));
            }
        }
        check_chunkings(&what, &data, &limits, &whole);
    }

    let mut skipped_names: Vec<&str> = skipped.iter().map(|(w, _)| w.as_str()).collect();
    skipped_names.sort();
    assert_eq!(skipped_names, SKIPPED, "skip list drifted: {skipped:?}");
    for line in &report {
        println!("{line}");
    }
    for (what, why) in &skipped {
        println!("{what}: skipped ({why})");
    }
    println!(
        "corpus: {valid_checked} valid and {invalid_checked} invalid fixtures checked, \
         {} skipped, Host inserted in {host_injected}",
        skipped.len()
    );
    // The corpus is pinned (README: 63 valid, 74 invalid); catch it shrinking.
    assert_eq!(
        (valid_checked, invalid_checked),
        (52, 68),
        "fixtures checked"
    );
}

#[test]
fn decode_http_follows_the_readme() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"GET / HTTP/1.1\\r\\n\n\\r\\n\n", b"GET / HTTP/1.1\r\n\r\n"),
        (b"a\\0b\\nc\\td", b"a\0b\nc\td"),
        (b"\\x0D\\x0a\\xff", b"\r\n\xff"),
    ];
    for &(raw, want) in cases {
        assert_eq!(decode_http(raw), want);
    }
}
