//! One client connection: its buffers, where it is in the request cycle, and when
//! it times out.

use std::time::Instant;

use ferricorn_http::{ChunkedDecoder, Head};
use ferricorn_wsgi::Paused;
use ferricorn_wsgi::{Local, Peer};

use crate::inbuf::InBuf;
use crate::outbuf::OutBuf;
use crate::responder::Progress;
use crate::stream::Stream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// The head is parsed; waiting for the body.
    Body,
    /// The response is out; our write side is shut and the client's leftover
    /// input is read and discarded until it closes (or a short deadline), so our
    /// close does not turn into a reset that destroys the response in flight.
    Lingering,
}

pub struct Conn {
    pub sock: Stream,
    /// The client, as the app sees it: a PROXY header's source replaces the
    /// connecting peer.
    pub peer: Peer,
    /// Who connected: what `forwarded_allow_ips` trust is decided by (a PROXY
    /// header is the proxy's word for its client, not grounds to trust that client).
    pub connected_from: Peer,
    pub local: Local,
    pub inbuf: InBuf,
    pub out: OutBuf,
    pub head: Head,
    pub phase: Phase,
    /// For a chunked body: the decoder and how many bytes after the head it has taken.
    pub chunked: Option<(ChunkedDecoder, usize)>,
    /// Decoded chunked body.
    pub body: Vec<u8>,
    /// Close once the output is flushed (error, `Connection: close`, stopping).
    pub close_after_flush: bool,
    /// The client shut its write side (read returned 0).
    pub peer_closed: bool,
    /// An event said the client hung up or the socket failed: read on to the
    /// end rather than stop at a short read.
    pub hangup_seen: bool,
    /// With `close_after_flush`: close without lingering (the client asked for
    /// the close and has nothing more in flight).
    pub close_at_once: bool,
    /// Reading stopped before the socket said WouldBlock (backpressure); resume by hand.
    pub read_pending: bool,
    /// Output is waiting for the socket: registered for WRITABLE.
    pub want_write: bool,
    /// Queued in the worker's list of answers to write after this turn.
    pub flush_deferred: bool,
    pub deadline: Instant,
    /// Requests answered on this connection.
    pub served: u64,
    /// `--proxy-protocol`: the start of the connection was checked for a PROXY header.
    pub proxy_checked: bool,
    /// A response whose app iteration waits for the client to take what was sent.
    pub parked: Option<Box<Parked>>,
}

/// A paused response and what its end needs: the request, for the logs (its
/// bytes have left the receive buffer), and when it started.
pub struct Parked {
    pub call: Paused,
    pub progress: Progress,
    pub request: RequestCopy,
    pub started: Instant,
    /// The client said `Connection: close`.
    pub client_said_close: bool,
}

/// The parts of a request the access and error logs name.
pub struct RequestCopy {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub minor_version: u8,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Conn {
    pub fn new(sock: Stream, peer: Peer, local: Local, deadline: Instant) -> Conn {
        Conn {
            sock,
            peer,
            connected_from: peer,
            local,
            inbuf: InBuf::default(),
            out: OutBuf::default(),
            head: Head::default(),
            phase: Phase::Head,
            chunked: None,
            body: Vec::new(),
            close_after_flush: false,
            peer_closed: false,
            hangup_seen: false,
            close_at_once: false,
            read_pending: false,
            want_write: false,
            flush_deferred: false,
            deadline,
            served: 0,
            proxy_checked: false,
            parked: None,
        }
    }

    /// Between requests with nothing buffered either way.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Head
            && self.inbuf.is_empty()
            && self.out.pending() == 0
            && self.parked.is_none()
    }

    /// Ready for the next request: forget the previous one's state.
    pub fn reset_request(&mut self) {
        self.head.clear();
        self.phase = Phase::Head;
        self.chunked = None;
        self.body.clear();
        self.inbuf.shrink_if_idle();
    }
}
