//! Any byte stream, fed to the request parser whole and in pieces (cut where a
//! seed taken from the input says), must give the same requests and bodies,
//! and be refused at the same request or not at all; it must never panic.
//! The same simulated connection as the crate's own tests
//! (crates/http/tests/common).
//!
//! Which status a refusal carries is not compared: a request that breaks two
//! rules at once (a request line over the limit that also holds a bare CR, say)
//! is refused for whichever the parser meets first, and that can depend on how
//! the bytes arrive (400 whole, 414 in pieces). Either way it is refused and
//! the connection closed.
#![no_main]

use ferricorn_http::Limits;
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/http/tests/common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    // Small limits, so the limit paths are reached by short inputs too.
    let limits = Limits {
        max_request_line: 256,
        max_field_size: 256,
        max_headers: 16,
        max_head: 2048,
        max_body: 4096,
        ..Limits::default()
    };
    let seen = |cuts: &[usize]| {
        let mut o = common::run(stream, &limits, cuts);
        let refusal = o.error.take().map(|(at, e)| {
            assert!(e.status() >= 400, "{e:?}");
            at
        });
        (o, refusal)
    };
    let whole = seen(&[]);
    let mut rng = common::XorShift(u64::from(seed) | 1);
    let cuts = rng.cuts(stream.len(), 1 + usize::from(seed % 32));
    assert_eq!(whole, seen(&cuts), "cuts: {cuts:?}");
    if stream.len() <= 256 {
        let bytes: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(whole, seen(&bytes), "byte by byte");
    }
});
