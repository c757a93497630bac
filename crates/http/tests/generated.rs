//! Property test: any valid request (or pipelined run of them) that proptest
//! can build parses to exactly what was built, however the bytes are cut into
//! reads. Shrinking turns a failure into a small request and a few cuts.

mod common;

use common::run;
use ferricorn_http::{Framing, Limits};
use proptest::prelude::*;

/// One request as generated: what the parser must give back.
#[derive(Debug, Clone)]
struct Spec {
    method: String,
    target: String,
    minor: u8,
    headers: Vec<(String, String)>,
    body: Option<Body>,
}

#[derive(Debug, Clone)]
enum Body {
    Length(Vec<u8>),
    /// Chunk sizes and the chunk extensions, then trailers.
    Chunked(Vec<u8>, Vec<usize>, Vec<(String, String)>),
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

fn header_name() -> impl Strategy<Value = String> {
    // Framing and connection fields are chosen by the generator, not at random.
    token().prop_filter("reserved name", |n| {
        ![
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "expect",
            // Refused when repeated (not a list): the generator may repeat names.
            "content-type",
        ]
        .contains(&n.to_ascii_lowercase().as_str())
    })
}

fn header_value() -> impl Strategy<Value = String> {
    // Visible ASCII and obs-text, single spaces inside; no leading or trailing space.
    "([!-~\u{80}-\u{ff}]([ !-~\u{80}-\u{ff}]{0,20}[!-~\u{80}-\u{ff}])?)?"
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[A-Za-z0-9._~%/-]{0,30}(\\?[A-Za-z0-9=&%+-]{0,20})?",
        Just("*".to_string()),
        "http://[a-z]{1,10}\\.example/[a-z0-9/]{0,10}",
    ]
}

fn body() -> impl Strategy<Value = Option<Body>> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..3000);
    prop_oneof![
        Just(None),
        bytes.clone().prop_map(|b| Some(Body::Length(b))),
        (
            bytes,
            proptest::collection::vec(1usize..700, 1..8),
            proptest::collection::vec((header_name(), header_value()), 0..3),
        )
            .prop_map(|(b, sizes, trailers)| Some(Body::Chunked(b, sizes, trailers))),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![
            Just("GET".to_string()),
            Just("POST".to_string()),
            Just("PUT".to_string()),
            "[A-Z]{1,10}",
        ],
        target(),
        0u8..=1,
        proptest::collection::vec((header_name(), header_value()), 0..8),
        body(),
    )
        .prop_map(|(method, target, minor, headers, body)| Spec {
            // The asterisk-form is for OPTIONS only.
            method: if target == "*" {
                "OPTIONS".to_string()
            } else {
                method
            },
            target,
            // Chunked is HTTP/1.1 only (a 1.0 request with it is refused).
            minor: if matches!(body, Some(Body::Chunked(..))) {
                1
            } else {
                minor
            },
            headers,
            body,
        })
}

/// The wire form; every request but the last asks to keep the connection.
fn encode(spec: &Spec, last: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let latin1 = |s: &str| s.chars().map(|c| c as u8).collect::<Vec<u8>>();
    out.extend(latin1(&format!(
        "{} {} HTTP/1.{}\r\n",
        spec.method, spec.target, spec.minor
    )));
    out.extend_from_slice(b"Host: h.example\r\n");
    for (n, v) in &spec.headers {
        out.extend(latin1(&format!("{n}: {v}\r\n")));
    }
    if spec.minor == 0 && !last {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    match &spec.body {
        None => out.extend_from_slice(b"\r\n"),
        Some(Body::Length(b)) => {
            out.extend(format!("Content-Length: {}\r\n\r\n", b.len()).bytes());
            out.extend_from_slice(b);
        }
        Some(Body::Chunked(b, sizes, trailers)) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &b[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                out.extend(format!("{n:x};i={i}\r\n").bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            out.extend_from_slice(b"0\r\n");
            for (n, v) in trailers {
                out.extend(latin1(&format!("{n}: {v}\r\n")));
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn cuts(len: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..=len, 0..40).prop_map(|mut c| {
        c.sort_unstable();
        c
    })
}

proptest! {
    // Failures are reported with their minimal input; no regressions file is written.
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn valid_requests_survive_any_chunking(
        (specs, wire, cuts) in proptest::collection::vec(spec(), 1..4).prop_flat_map(|specs| {
            let n = specs.len();
            let wire: Vec<u8> = specs
                .iter()
                .enumerate()
                .flat_map(|(i, s)| encode(s, i + 1 == n))
                .collect();
            let len = wire.len();
            (Just(specs), Just(wire), cuts(len))
        })
    ) {
        let limits = Limits::default();
        let got = run(&wire, &limits, &cuts);
        prop_assert_eq!(got.error, None);
        prop_assert!(!got.partial);
        prop_assert_eq!(got.requests.len(), specs.len());
        for (req, spec) in got.requests.iter().zip(&specs) {
            let latin1 = |s: &str| s.chars().map(|c| c as u8).collect::<Vec<u8>>();
            prop_assert_eq!(&req.method, &latin1(&spec.method));
            prop_assert_eq!(&req.target, &latin1(&spec.target));
            prop_assert_eq!(req.minor_version, spec.minor);
            let own: Vec<(Vec<u8>, Vec<u8>)> = req
                .headers
                .iter()
                .filter(|(n, _)| {
                    !n.eq_ignore_ascii_case(b"host")
                        && !n.eq_ignore_ascii_case(b"content-length")
                        && !n.eq_ignore_ascii_case(b"transfer-encoding")
                        && !n.eq_ignore_ascii_case(b"connection")
                })
                .cloned()
                .collect();
            let want: Vec<(Vec<u8>, Vec<u8>)> = spec
                .headers
                .iter()
                .map(|(n, v)| (latin1(n), latin1(v)))
                .collect();
            prop_assert_eq!(own, want);
            match &spec.body {
                None => {
                    prop_assert_eq!(req.framing, Framing::None);
                    prop_assert!(req.body.is_empty());
                }
                Some(Body::Length(b)) => {
                    prop_assert_eq!(req.framing, Framing::Length(b.len() as u64));
                    prop_assert_eq!(&req.body, b);
                }
                Some(Body::Chunked(b, _, trailers)) => {
                    prop_assert_eq!(req.framing, Framing::Chunked);
                    prop_assert_eq!(&req.body, b);
                    let want: Vec<(Vec<u8>, Vec<u8>)> = trailers
                        .iter()
                        .map(|(n, v)| (latin1(n), latin1(v)))
                        .collect();
                    prop_assert_eq!(&req.trailers, &want);
                }
            }
        }
    }
}
