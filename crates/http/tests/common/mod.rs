//! A simulated connection for the integration tests: feeds a byte stream to
//! `parse_head` and `ChunkedDecoder` in pieces, the way the worker's event
//! loop does, and records what came out.

#![allow(dead_code)] // each test binary uses a different part of this

use ferricorn_http::{
    parse_head, ChunkStatus, ChunkedDecoder, Framing, Head, HttpError, Limits, Parsed,
};

/// One request as seen by the application, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub minor_version: u8,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub body: Vec<u8>,
    pub trailers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Everything a connection produced from one byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Complete requests, in order.
    pub requests: Vec<Request>,
    /// The refusal, with the stream offset where the refused request began.
    pub error: Option<(usize, HttpError)>,
    /// Input ended in the middle of a request (bytes buffered, or a body
    /// still expected).
    pub partial: bool,
    /// Bytes left unread because a request ended the connection
    /// (keep_alive false).
    pub ignored: usize,
    /// The request whose body was still arriving when input ended.
    pub in_progress: Option<Request>,
}

enum Phase {
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
    Closed,
}

/// Feed `data` split at the (ascending) offsets in `cuts`.
pub fn run(data: &[u8], limits: &Limits, cuts: &[usize]) -> Outcome {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut prev = 0;
    for &cut in cuts {
        assert!(prev <= cut && cut <= data.len(), "bad cut {cut}");
        pieces.push(&data[prev..cut]);
        prev = cut;
    }
    pieces.push(&data[prev..]);

    let mut buf: Vec<u8> = Vec::new();
    let mut start = 0; // stream offset of buf[0]
    let mut request_start = 0;
    let mut head = Head::default();
    let mut phase = Phase::Head;
    let mut current: Option<Request> = None;
    let mut out = Outcome {
        requests: Vec::new(),
        error: None,
        partial: false,
        ignored: 0,
        in_progress: None,
    };

    for piece in pieces {
        if let Phase::Closed = phase {
            out.ignored += piece.len();
            continue;
        }
        buf.extend_from_slice(piece);
        loop {
            match &mut phase {
                Phase::Closed => {
                    out.ignored += buf.len();
                    buf.clear();
                    break;
                }
                Phase::Head => {
                    if buf.is_empty() {
                        break;
                    }
                    match parse_head(&buf, limits, &mut head) {
                        Ok(Parsed::Partial) => break,
                        Err(e) => {
                            out.error = Some((request_start, e));
                            return out;
                        }
                        Ok(Parsed::Complete) => {
                            current = Some(owned(&buf, &head));
                            buf.drain(..head.len);
                            start += head.len;
                            phase = match head.framing {
                                Framing::None => Phase::Length(0),
                                Framing::Length(n) => Phase::Length(n),
                                Framing::Chunked => {
                                    Phase::Chunked(ChunkedDecoder::new(limits.max_body))
                                }
                            };
                        }
                    }
                }
                Phase::Length(remaining) => {
                    let n = (*remaining).min(buf.len() as u64) as usize;
                    let req = current.as_mut().unwrap();
                    req.body.extend_from_slice(&buf[..n]);
                    buf.drain(..n);
                    start += n;
                    *remaining -= n as u64;
                    if *remaining > 0 {
                        break;
                    }
                    phase = finish(&mut out, &mut current, start, &mut request_start);
                }
                Phase::Chunked(decoder) => {
                    if buf.is_empty() {
                        break;
                    }
                    let req = current.as_mut().unwrap();
                    match decoder.decode(&buf, &mut req.body) {
                        Err(e) => {
                            out.error = Some((request_start, e));
                            return out;
                        }
                        Ok((n, status)) => {
                            buf.drain(..n);
                            start += n;
                            if status == ChunkStatus::NeedMore {
                                assert!(buf.is_empty(), "NeedMore must consume everything");
                                break;
                            }
                            req.trailers = decoder.trailers().to_vec();
                            phase = finish(&mut out, &mut current, start, &mut request_start);
                        }
                    }
                }
            }
        }
    }
    out.partial = match phase {
        Phase::Head => !buf.is_empty(),
        Phase::Closed => false,
        Phase::Length(_) | Phase::Chunked(_) => true,
    };
    out.in_progress = current;
    out
}

fn finish(
    out: &mut Outcome,
    current: &mut Option<Request>,
    start: usize,
    request_start: &mut usize,
) -> Phase {
    let req = current.take().unwrap();
    let keep_alive = req.keep_alive;
    out.requests.push(req);
    *request_start = start;
    if keep_alive {
        Phase::Head
    } else {
        Phase::Closed
    }
}

fn owned(buf: &[u8], head: &Head) -> Request {
    Request {
        method: buf[head.method.clone()].to_vec(),
        target: buf[head.target.clone()].to_vec(),
        minor_version: head.minor_version,
        headers: head
            .headers
            .iter()
            .map(|(n, v)| (buf[n.clone()].to_vec(), buf[v.clone()].to_vec()))
            .collect(),
        framing: head.framing,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
        body: Vec::new(),
        trailers: Vec::new(),
    }
}

/// A small deterministic PRNG (xorshift64) so "random" splits are repeatable.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Ascending random cut points in `0..=len`, roughly `len / avg` of them.
    pub fn cuts(&mut self, len: usize, avg: usize) -> Vec<usize> {
        let mut cuts = Vec::new();
        let mut pos = 0;
        loop {
            pos += 1 + (self.next() % (2 * avg as u64)) as usize;
            if pos >= len {
                return cuts;
            }
            cuts.push(pos);
        }
    }
}

/// Every chunking we try: whole, byte by byte, every two-piece split and
/// some seeded random ones. Returns (description, cuts).
pub fn chunkings(len: usize, seed: u64) -> Vec<(String, Vec<usize>)> {
    let mut all = vec![
        ("whole".to_string(), vec![]),
        ("byte by byte".to_string(), (1..len).collect()),
    ];
    for k in 1..len {
        all.push((format!("split at {k}"), vec![k]));
    }
    let mut rng = XorShift(seed | 1);
    for avg in [2, 7, 64] {
        for i in 0..5 {
            all.push((format!("random avg {avg} #{i}"), rng.cuts(len, avg)));
        }
    }
    all
}
