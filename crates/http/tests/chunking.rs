//! Property-style check without extra crates: for a set of streams, every
//! chunking drawn from a fixed-seed xorshift PRNG gives exactly the outcome
//! of feeding the stream whole — same requests, bodies, trailers, errors.

mod common;

use common::{run, XorShift};
use ferricorn_http::{Framing, HttpError, Limits};

/// Streams that parse cleanly, each with the number of requests in it.
const VALID: &[(&str, usize)] = &[
    ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1),
    (
        "\r\n\r\nGET /x?y=z HTTP/1.1\r\nHost: a\r\nX: \t padded \t\r\n\r\n",
        1,
    ),
    (
        "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
        1,
    ),
    (
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n\
         5 ; a=b ; c=\"d;e\"\r\nhello\r\n6\r\n world\r\n0;last\r\nX-Sum: 1\r\nX-More:  2 \r\n\r\n",
        1,
    ),
    (
        "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
         POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         PUT /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz\
         GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n\
         GET /ignored HTTP/1.1\r\nHost: a\r\n\r\n",
        4,
    ),
    (
        "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /new HTTP/1.1\r\nHost: a\r\n\r\n",
        2,
    ),
    (
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        1,
    ),
    ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 1),
];

/// Streams refused somewhere (after zero or more good requests).
const INVALID: &[(&str, HttpError)] = &[
    (
        "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        HttpError::BadRequest("missing or duplicate Host"),
    ),
    (
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0 \r\n\r\n",
        HttpError::BadRequest("invalid chunk size"),
    ),
    (
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        HttpError::BadRequest("bare CR in head"),
    ),
    ("GET / HTTP/2.0\r\n\r\n", HttpError::VersionNotSupported),
    (
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        HttpError::NotImplemented,
    ),
];

const SEEDS: u64 = 200;

#[test]
fn random_chunkings_match_whole_input() {
    let limits = Limits::default();
    for &(stream, count) in VALID {
        let data = stream.as_bytes();
        let whole = run(data, &limits, &[]);
        assert_eq!(whole.error, None, "{stream:?}");
        assert!(!whole.partial, "{stream:?}");
        assert_eq!(whole.requests.len(), count, "{stream:?}");
        for seed in 1..=SEEDS {
            let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let avg = 1 + (rng.next() % 16) as usize;
            let cuts = rng.cuts(data.len(), avg);
            assert_eq!(
                run(data, &limits, &cuts),
                whole,
                "{stream:?} cut at {cuts:?}"
            );
        }
    }
}

#[test]
fn random_chunkings_refuse_the_same_way() {
    let limits = Limits::default();
    for &(stream, want) in INVALID {
        let data = stream.as_bytes();
        let whole = run(data, &limits, &[]);
        assert_eq!(whole.error.map(|e| e.1), Some(want), "{stream:?}");
        for seed in 1..=SEEDS {
            let mut rng = XorShift(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
            let avg = 1 + (rng.next() % 8) as usize;
            let cuts = rng.cuts(data.len(), avg);
            assert_eq!(
                run(data, &limits, &cuts),
                whole,
                "{stream:?} cut at {cuts:?}"
            );
        }
    }
}

#[test]
fn decoded_bodies_are_right() {
    // Spot-check the harness itself on the chunked stream above.
    let out = run(VALID[3].0.as_bytes(), &Limits::default(), &[]);
    let req = &out.requests[0];
    assert_eq!(req.framing, Framing::Chunked);
    assert!(req.expect_continue);
    assert_eq!(req.body, b"hello world");
    assert_eq!(
        req.trailers,
        [
            (b"X-Sum".to_vec(), b"1".to_vec()),
            (b"X-More".to_vec(), b"2".to_vec())
        ]
    );
    let out = run(VALID[4].0.as_bytes(), &Limits::default(), &[]);
    let bodies: Vec<&[u8]> = out.requests.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies, [&b""[..], b"abc", b"xyz", b""]);
    assert!(
        out.ignored > 0,
        "bytes after Connection: close are not read"
    );
}
