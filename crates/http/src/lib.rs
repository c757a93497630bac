//! HTTP/1.1 request framing and response-head writing for ferricorn.
//!
//! What it does:
//! - [`parse_head`] finds and parses a request head in a receive buffer,
//!   incrementally ("need more bytes" is [`Parsed::Partial`]), on top of
//!   `httparse`, and decides the body [`Framing`], keep-alive and
//!   `Expect: 100-continue`. The rules are strict (RFC 9112) so that requests
//!   cannot be smuggled: ambiguous framing is refused, never guessed.
//! - [`ChunkedDecoder`] decodes a chunked request body fed in arbitrary
//!   pieces and stops exactly where the next pipelined request begins.
//! - [`write_head`], [`write_error`], [`write_chunk`] and [`write_last_chunk`]
//!   serialize responses; [`HttpDate`] caches the `Date` value.
//!
//! What it does not do: no I/O, no sockets, no timeouts, no Python and no
//! WSGI environ building (dropping `_` header names, decoding the target,
//! choosing what to do with absolute-form or `*` targets is the worker's
//! job). It does not decode transfer codings other than `chunked` (they are
//! refused with 501), does not do HTTP/2, and has no `unsafe`.

#![forbid(unsafe_code)]

mod chunked;
mod date;
mod error;
mod forwarded;
mod head;
mod proxy;
mod response;

pub use chunked::{ChunkStatus, ChunkedDecoder};
pub use date::HttpDate;
pub use error::HttpError;
pub use forwarded::{forwarded_scheme, AllowList};
pub use head::{
    has_ctl, is_tchar, parse_head, parse_head_unfolding, Framing, Head, Limits, Parsed,
};
pub use proxy::{parse_proxy, ProxyParsed, ProxySource};
pub use response::{
    write_chunk, write_chunk_size, write_error, write_head, write_last_chunk, ResponseFraming,
    ResponseHead,
};
