//! One request through the app: from a complete head (and a body buffered or
//! about to stream) to a settled response, an access-log line and what the
//! connection does next. The loop that feeds it is server.rs.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferricorn_http::{forwarded_scheme, AllowList, ChunkedDecoder, Framing, HttpDate};
use ferricorn_signals::scoreboard::Slot;
use ferricorn_signals::SelfPipe;
use ferricorn_wsgi::{App, Body, CallError, Outcome, Python, Request};
use log::{debug, error, warn};

use crate::access_log::{AccessLog, Entry};
use crate::connection::{Conn, Parked, RequestCopy};
use crate::responder::{RequestInfo, Responder, Scratch, WRITE_STALL};
use crate::server::{reject, stop_pending, Shared};
use crate::stream_body::{Failure, StreamBody};

/// What a request's dispatch needs from the worker besides the connection.
pub struct Ctx<'a, 'py> {
    /// When the app call began.
    pub started: Instant,
    pub py: Python<'py>,
    pub app: &'a mut App,
    pub date: &'a HttpDate,
    pub scratch: &'a mut Scratch,
    pub stopping: bool,
    pub signals: Option<&'a SelfPipe>,
    pub shared: &'a Shared,
    pub slot: Option<&'a Slot>,
    /// The same slot, for every loop of the worker: its request counters.
    pub counts: Option<&'a Slot>,
    pub access: &'a mut AccessLog,
    pub trusted: &'a AllowList,
    pub body_timeout: Duration,
}

/// Call the app for the request at the front of the input: complete up to
/// `end`, or (`None`) with its body still arriving.
/// Returns true when the app asked the process to end (SystemExit).
pub fn dispatch(ctx: Ctx<'_, '_>, conn: &mut Conn, end: Option<usize>) -> bool {
    let Ctx {
        started,
        py,
        app,
        date,
        scratch,
        stopping,
        signals,
        shared,
        slot,
        counts,
        access,
        trusted,
        body_timeout,
    } = ctx;
    let stream = match end {
        Some(_) => None,
        None => {
            // Earlier answers on this connection go out before a 100 Continue or this one.
            let flushed = conn.out.flush_blocking(py, &mut conn.sock, WRITE_STALL);
            match flushed.and_then(|()| begin_stream(conn, body_timeout)) {
                Ok(s) => Some(s),
                Err(e) => {
                    debug!("client {}: {e}", conn.peer);
                    conn.out = Default::default();
                    conn.close_after_flush = true;
                    return false;
                }
            }
        }
    };
    if stream.is_none() && conn.out.pending() > 0 {
        // The answer to a pipelined request before this one goes to the client
        // before this call, which may take its time. (An error shows at the
        // connection's next write.)
        let _ = conn.out.flush(py, &mut conn.sock);
    }
    let bytes = conn.inbuf.bytes();
    let head = &conn.head;
    let headers: Vec<(&[u8], &[u8])> = head
        .headers
        .iter()
        .map(|(n, v)| (&bytes[n.clone()], &bytes[v.clone()]))
        .collect();
    let body = match (&stream, head.framing, end) {
        (Some(s), _, _) => Body::Stream(s.clone()),
        (None, Framing::Chunked, _) => Body::Bytes(&conn.body),
        (None, Framing::Length(_), Some(end)) => Body::Bytes(&bytes[head.len..end]),
        (None, _, _) => Body::Bytes(&[]),
    };
    let method = &bytes[head.method.clone()];
    let target = &bytes[head.target.clone()];
    let url_scheme = if conn.sock.is_tls() {
        "https"
    } else if conn.connected_from.allowed_by(trusted) {
        match forwarded_scheme(&headers) {
            Ok(s) => s.unwrap_or("http"),
            Err(e) => {
                // As gunicorn: a request cannot be both http and https.
                reject(conn, e, date);
                return false;
            }
        }
    } else {
        "http"
    };
    let req = Request {
        method,
        target,
        minor_version: head.minor_version,
        headers: &headers,
        body,
        peer: conn.peer,
        local: &conn.local,
        url_scheme,
    };
    let info = RequestInfo {
        head_request: method == b"HEAD",
        minor_version: head.minor_version,
        keep_alive: head.keep_alive && !stopping,
    };
    let mut responder = Responder::new(py, &mut conn.out, &mut conn.sock, date, scratch, info);
    responder.stream = stream.clone();
    responder.may_pause = stream.is_none();
    if access.wants_response_headers() {
        responder.log_headers = Some(Vec::new());
    }
    if let Some(slot) = slot {
        slot.enter_request(method, target);
    }
    counts.inspect(|c| c.enter_app());
    let result = app.call(py, &req, &mut responder);
    counts.inspect(|c| c.leave_app());
    if let Some(slot) = slot {
        slot.leave_request();
    }
    let result = match result {
        Ok(Outcome::Paused(call)) => {
            // The client has not taken what was sent: the rest of the body comes
            // when it has (Server::resume), and other connections go on meanwhile.
            let request = RequestCopy {
                method: method.to_vec(),
                target: target.to_vec(),
                minor_version: req.minor_version,
                headers: if access.enabled() {
                    headers
                        .iter()
                        .map(|(n, v)| (n.to_vec(), v.to_vec()))
                        .collect()
                } else {
                    Vec::new()
                },
            };
            let progress = responder.suspend();
            let client_said_close = !conn.head.keep_alive;
            conn.inbuf.consume(end.unwrap_or(conn.head.len));
            conn.reset_request();
            conn.served += 1;
            conn.parked = Some(Box::new(Parked {
                call,
                progress,
                request,
                started,
                client_said_close,
            }));
            return false;
        }
        Ok(Outcome::Done) => Ok(()),
        Err(e) => Err(e),
    };
    let body_failure = stream.as_ref().and_then(|s| lock(s).failure);
    let mut settled = Settled::default();
    match result {
        Ok(()) => {
            if stop_pending(shared, signals) {
                responder.keep_alive = false;
            }
            if let Some(s) = &stream {
                // An app that ignored a small rest of the body still keeps the connection.
                lock(s).settle();
            }
            let _ = responder.finish();
        }
        Err(CallError::App { .. }) if body_failure == Some(Failure::Disconnected) => {
            debug!(
                "client {} went away while sending the request body",
                req.peer
            );
            settled.client_gone = true;
        }
        Err(CallError::App { .. }) if body_failure.is_some() => {
            let (status, reason) = match body_failure {
                Some(Failure::Bad(e)) => (e.status(), e.reason()),
                _ => (408, "Request Timeout"),
            };
            warn!(
                "{} {}: the request body could not be read; answered {status} {reason}",
                String::from_utf8_lossy(method),
                String::from_utf8_lossy(target)
            );
            responder.fail_with(status, reason);
        }
        Err(e) => settled = settle_error(e, &mut responder, method, target, req.peer),
    }
    warn_problem(&mut responder, method, target);
    let Settled {
        client_gone,
        exit: exit_requested,
    } = settled;
    let keep_alive = responder.keep_alive && !client_gone;
    let elapsed = started.elapsed();
    ferricorn_log::statsd::request(responder.status, elapsed);
    counts.inspect(|c| c.count_response(method, responder.status, elapsed));
    if access.enabled() {
        access.record(&Entry {
            peer: req.peer,
            method,
            target,
            minor_version: req.minor_version,
            request_headers: &headers,
            status: responder.status,
            response_headers: responder.log_headers.as_deref().unwrap_or(&[]),
            body_bytes: responder.body_bytes,
            elapsed,
        });
    }
    drop(responder);
    let client_said_close = !conn.head.keep_alive;
    let mut complete = true;
    match (&stream, end) {
        (Some(s), _) => {
            let mut s = lock(s);
            complete = s.is_done();
            let next = s.detach();
            conn.inbuf.consume(conn.head.len);
            conn.inbuf.extend(&next);
            // Bytes of the next request may have arrived while the app read.
            conn.read_pending = true;
            if !complete {
                conn.close_after_flush = true;
            }
        }
        (None, end) => conn.inbuf.consume(end.unwrap_or(conn.head.len)),
    }
    conn.reset_request();
    conn.served += 1;
    after_response(conn, keep_alive, client_gone, client_said_close && complete);
    exit_requested
}

/// Something the response's writer noticed (a short body, a shrunk file) goes to
/// the error log with the request it was for.
pub fn warn_problem(responder: &mut Responder<'_>, method: &[u8], target: &[u8]) {
    if let Some(problem) = responder.problem.take() {
        warn!(
            "{} {}: {problem}",
            String::from_utf8_lossy(method),
            String::from_utf8_lossy(target)
        );
    }
}

/// A response is complete: unless the connection is kept, it closes once the
/// output is out. `client_done`: the client said this was its last request and
/// sent it whole.
pub fn after_response(conn: &mut Conn, keep_alive: bool, client_gone: bool, client_done: bool) {
    if !keep_alive {
        conn.close_after_flush = true;
        // Nothing more will come from the client: no need to linger for input
        // (as nginx).
        conn.close_at_once = client_done && conn.inbuf.is_empty();
    }
    if client_gone {
        conn.out = Default::default();
    }
}

/// What a call's end means for its connection and its worker.
#[derive(Default)]
pub struct Settled {
    pub client_gone: bool,
    /// The app asked the process to end (SystemExit).
    pub exit: bool,
}

/// Log a failed call and answer for it as far as the head allows.
pub fn settle_error(
    e: CallError,
    responder: &mut Responder<'_>,
    method: &[u8],
    target: &[u8],
    peer: ferricorn_wsgi::Peer,
) -> Settled {
    let mut settled = Settled::default();
    match e {
        CallError::App { traceback, .. } => {
            error!(
                target: ferricorn_log::EXCEPTION,
                "Error handling request {} {}\n{traceback}",
                String::from_utf8_lossy(method),
                String::from_utf8_lossy(target)
            );
            responder.fail();
        }
        CallError::Exit { traceback } => {
            // As a Python process would: the worker ends (cleanly) and the master
            // starts another. The request gets a 500 rather than a cut connection.
            error!(
                "{} {}: the app raised {}; this worker stops and will be replaced",
                String::from_utf8_lossy(method),
                String::from_utf8_lossy(target),
                traceback.lines().last().unwrap_or("SystemExit")
            );
            responder.fail();
            settled.exit = true;
        }
        CallError::Client(e) => {
            debug!("client {peer} went away during the response: {e}");
            settled.client_gone = true;
        }
    }
    settled
}

pub fn lock(s: &Mutex<StreamBody>) -> std::sync::MutexGuard<'_, StreamBody> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Move what arrived of the body out of the connection's buffers into a
/// stream that reads the rest from the socket. The head stays in `inbuf`.
fn begin_stream(conn: &mut Conn, timeout: Duration) -> io::Result<Arc<Mutex<StreamBody>>> {
    use std::os::fd::AsFd;
    let fd = conn.sock.as_fd().try_clone_to_owned()?;
    let head_len = conn.head.len;
    let (content_length, decoder, prefix) = match conn.head.framing {
        Framing::Chunked => {
            let (decoder, fed) = conn
                .chunked
                .take()
                .unwrap_or_else(|| (ChunkedDecoder::new(u64::MAX), 0));
            let raw = conn.inbuf.bytes()[head_len + fed..].to_vec();
            (None, Some(decoder), raw)
        }
        Framing::Length(n) => (Some(n), None, conn.inbuf.bytes()[head_len..].to_vec()),
        Framing::None => (Some(0), None, Vec::new()),
    };
    conn.inbuf.truncate(head_len);
    let stream = StreamBody::new(
        fd,
        content_length,
        decoder,
        prefix,
        std::mem::take(&mut conn.body),
        conn.head.expect_continue,
        timeout,
    );
    Ok(Arc::new(Mutex::new(stream)))
}
