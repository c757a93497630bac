//! Any byte stream, fed to the request parser whole and in pieces (cut where a
//! seed taken from the input says), must give the same requests and bodies,
//! and be refused at the same request with the same status, or not at all; it
//! must never panic. The same simulated connection as the crate's own tests
//! (crates/http/tests/common). The reason text of a refusal is only for the
//! log and is not compared.
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
        let refusal = o.error.take().map(|(at, e)| (at, e.status()));
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
