//! The worker's event loop: one mio `Poll` over the shared listening sockets, the
//! signal pipe and every client connection. Slow or idle clients cost a slot in
//! the table, never the worker's attention; the app is called only for a request
//! whose head is complete and whose body is buffered, or, past
//! `--body-buffer-size` or when the client waits for `100 Continue`, streams
//! from the client as the app reads it (see stream_body.rs). The call itself, and
//! what its end means for the connection, is dispatch.rs.

use std::io;
use std::time::{Duration, Instant, SystemTime};

use ferricorn_http::{
    parse_head, parse_head_unfolding, parse_proxy, write_error, AllowList, ChunkStatus,
    ChunkedDecoder, Framing, HttpDate, HttpError, Limits, Parsed, ProxyParsed, ProxySource,
};
use ferricorn_signals::scoreboard::{Scoreboard, Slot};
use ferricorn_signals::{closing, Report, SelfPipe, Signal};
use ferricorn_wsgi::{App, Outcome, Peer, Python};
use log::{debug, error, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::access_log::{AccessLog, Entry};
use crate::connection::{Conn, Parked, Phase};
use crate::dispatch::{after_response, dispatch, settle_error, warn_problem, Ctx, Settled};
use crate::inbuf::InBuf;
use crate::reloader::Reloader;
use crate::responder::{Responder, Scratch};
use crate::stream::Listener;

const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
const WAKER_TOKEN: Token = Token(usize::MAX - 2);
const FIRST_LISTENER: usize = usize::MAX - 3;
/// Connections accepted per wake-up before others get a turn (one loop per worker).
pub const ACCEPT_BATCH: usize = 32;
/// Output queued for a client before the worker stops reading its further requests.
const HIGH_WATER: usize = 256 * 1024;
/// Pipelined input buffered ahead of processing, at most.
const READ_CAP: usize = 1 << 20;
/// How long a closing connection's leftover input is drained before it is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// Idle connections get this long after a stop begins to send one more request.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// A TERM from another process than the master (sent to the whole process
/// group): how long to watch the sockets for the master's sign that the whole
/// server stops, before leaving the queue to the peers.
const GROUP_STOP_WAIT: Duration = Duration::from_millis(100);
/// While a stop drains the listening sockets, how often they are tried again.
const DRAIN_CHECK: Duration = Duration::from_millis(10);
/// Longest an answer is held back to go out with others (see `flush_deferred`).
const DEFER_LIMIT: Duration = Duration::from_millis(1);
/// Answers are held back only while the app averages less than this per
/// request: then the next call is very likely short too.
const FAST_APP: Duration = Duration::from_micros(500);
/// Receive buffers kept for new connections, at most.
const SPARE_BUFS: usize = 64;
/// How often deadlines are checked.
const SWEEP: Duration = Duration::from_millis(500);
/// A worker over its fair share of connections leaves a new one to its peers
/// this long; if none took it by then, it takes it after all.
const ACCEPT_DEFER: Duration = Duration::from_millis(2);

/// State the loops of one worker share when it runs several (`--threads`).
#[derive(Default)]
pub struct Shared {
    /// A graceful stop began (set by the loop that owns the signals).
    pub stop: AtomicBool,
    /// Requests answered by every loop of this worker.
    pub served: AtomicU64,
    /// Bumped on USR1: every loop reopens its access log.
    pub reopen: AtomicU64,
    /// Wake-ups of the other loops, to see `stop` and `reopen` at once.
    pub wakers: Mutex<Vec<Arc<Waker>>>,
    /// Each loop's load, for spreading connections over the loops.
    pub loads: Mutex<Vec<Arc<LoopLoad>>>,
}

/// One loop's connections, and whether it is inside the app now. A loop serves
/// its connections one request at a time, so with `--threads` connections are
/// spread over the loops as they are over the workers: a loop holding more than
/// one above the average of its siblings that are not in the app leaves a new
/// connection to them (and takes it after `ACCEPT_DEFER` if none did).
#[derive(Default)]
pub struct LoopLoad {
    conns: AtomicU64,
    in_app: AtomicBool,
}

impl Shared {
    fn loop_over_share(&self, me: &LoopLoad) -> bool {
        let Ok(loads) = self.loads.lock() else {
            return false;
        };
        if loads.len() < 2 {
            return false;
        }
        let mine = me.conns.load(Ordering::Relaxed);
        let (mut total, mut peers) = (mine, 1u64);
        for l in loads.iter() {
            if !std::ptr::eq(Arc::as_ptr(l), me) && !l.in_app.load(Ordering::Relaxed) {
                total += l.conns.load(Ordering::Relaxed);
                peers += 1;
            }
        }
        ferricorn_signals::scoreboard::over_share(mine, total, peers)
    }
}

impl Shared {
    fn wake_all(&self) {
        if let Ok(wakers) = self.wakers.lock() {
            for w in wakers.iter() {
                let _ = w.wake();
            }
        }
    }
}

/// What every loop of a worker is made of (each `--threads` loop has its own).
pub struct LoopParts {
    pub app: App,
    pub listeners: Vec<ferricorn_signals::Listening>,
    pub settings: Settings,
    /// The status pipe to the master.
    pub status: std::fs::File,
    pub max_requests: Option<u64>,
    pub access: AccessLog,
    pub error_log: Option<String>,
}

/// What one loop owns beyond connections: the main loop has the signals, the
/// request tracking in the scoreboard slot and the reloader; the others
/// (`--threads`) share the rest, and count their connections in the same slot.
pub struct Role {
    pub signals: Option<SelfPipe>,
    pub board: Option<(Arc<Scoreboard>, usize)>,
    pub reloader: Option<Reloader>,
    pub shared: Arc<Shared>,
}

/// What the event loop needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub keepalive: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub limits: Limits,
    pub master_pid: i32,
    /// `--forwarded-allow-ips`.
    pub trusted: AllowList,
    /// Connections taken per wake-up. With several loops in a worker, one at a
    /// time, so a loop about to block in the app does not hoard connections that
    /// an idle loop could serve.
    pub accept_batch: usize,
    /// `--proxy-protocol`: peers allowed to send a PROXY header; None = off.
    pub proxy: Option<AllowList>,
    /// `--body-buffer-size`: larger bodies stream to the app instead.
    pub body_buffer: usize,
    /// The listeners defer accepts until data arrives (TCP_DEFER_ACCEPT), so a
    /// connection is read as soon as it is accepted, not on the next turn.
    pub read_at_accept: bool,
    /// `--certfile`: TCP connections are TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct Server<'py> {
    py: Python<'py>,
    poll: Poll,
    listeners: Vec<Option<Listener>>,
    /// This loop's share of the worker's connections (`--threads`).
    load: Arc<LoopLoad>,
    /// Receive buffers of closed connections, for new ones.
    spare_bufs: Vec<Vec<u8>>,
    /// Connections accepted in this call of `accept_from`, to read at once.
    just_accepted: Vec<usize>,
    /// Connections with answers to write once this turn's events are handled.
    deferred: Vec<usize>,
    /// When the oldest of them was held back.
    deferred_since: Option<Instant>,
    /// Moving average of the time the app takes per request.
    app_time: Duration,
    conns: Slab<Conn>,
    signals: Option<SelfPipe>,
    app: App,
    date: HttpDate,
    settings: Settings,
    stopping: bool,
    accept_pending: bool,
    /// The pending accept was left to the peers (fair share), not cut short.
    accept_deferred: bool,
    accept_retry_at: Instant,
    last_sweep: Instant,
    /// The time as last read: after each poll and each app call. Close enough
    /// for deadlines (seconds) and the 1 ms deferral, and one clock read fewer
    /// each time it serves.
    now: Instant,
    scratch: Scratch,
    board: Option<(Arc<Scoreboard>, usize)>,
    /// This loop writes heartbeats and requests to the slot (the main loop).
    tracks_requests: bool,
    shared: Arc<Shared>,
    reopened: u64,
    status: std::fs::File,
    /// Ask the master for a replacement after this many requests.
    max_requests: Option<u64>,
    access: AccessLog,
    /// `--error-logfile`: reopened on USR1 like the access log.
    error_log: Option<String>,
    reloader: Option<Reloader>,
    accept_errors: ErrorTally,
    /// Until when a stop may still turn out to be the whole server's.
    stop_undecided_until: Instant,
}

/// How often a failing `accept` is logged, at most.
const ACCEPT_ERROR_EVERY: Duration = Duration::from_secs(5);

/// A repeated error, logged once per [`ACCEPT_ERROR_EVERY`] with how many times
/// it happened since: EMFILE retried every 100 ms would otherwise fill the log.
#[derive(Default)]
struct ErrorTally {
    logged_at: Option<Instant>,
    since: u64,
}

impl ErrorTally {
    fn record(&mut self, e: &io::Error) {
        let now = Instant::now();
        self.since += 1;
        if self
            .logged_at
            .is_some_and(|at| now.duration_since(at) < ACCEPT_ERROR_EVERY)
        {
            return;
        }
        let repeats = self.since - 1;
        if repeats == 0 {
            warn!("accept failed: {e}");
        } else {
            warn!(
                "accept failed: {e} ({repeats} more times in the last {}s)",
                ACCEPT_ERROR_EVERY.as_secs()
            );
        }
        self.logged_at = Some(now);
        self.since = 0;
    }
}

impl<'py> Server<'py> {
    pub fn new(py: Python<'py>, parts: LoopParts, role: Role) -> io::Result<Server<'py>> {
        let LoopParts {
            app,
            listeners,
            settings,
            status,
            max_requests,
            access,
            error_log,
        } = parts;
        let Role {
            signals,
            board,
            reloader,
            shared,
        } = role;
        let poll = Poll::new()?;
        if let Some(signals) = &signals {
            poll.registry().register(
                &mut SourceFd(&signals.read_fd()),
                SIGNAL_TOKEN,
                Interest::READABLE,
            )?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
        if let Ok(mut wakers) = shared.wakers.lock() {
            wakers.push(waker);
        }
        let load = Arc::new(LoopLoad::default());
        if let Ok(mut loads) = shared.loads.lock() {
            loads.push(load.clone());
        }
        let mut mio_listeners = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let mut l = Listener::new(l)?;
            poll.registry()
                .register(&mut l, Token(FIRST_LISTENER - i), Interest::READABLE)?;
            mio_listeners.push(Some(l));
        }
        let now = Instant::now();
        let tracks_requests = signals.is_some();
        Ok(Server {
            py,
            poll,
            listeners: mio_listeners,
            load,
            spare_bufs: Vec::new(),
            just_accepted: Vec::new(),
            deferred: Vec::new(),
            deferred_since: None,
            app_time: Duration::ZERO,
            conns: Slab::new(),
            signals,
            app,
            date: HttpDate::new(),
            settings,
            stopping: false,
            accept_pending: false,
            accept_deferred: false,
            accept_retry_at: now,
            last_sweep: now,
            now,
            scratch: Scratch::default(),
            tracks_requests,
            board,
            shared,
            reopened: 0,
            status,
            max_requests,
            access,
            error_log,
            reloader,
            accept_errors: ErrorTally::default(),
            stop_undecided_until: now,
        })
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serve until stopped and every connection is done.
    pub fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        if let Some(slot) = self.slot() {
            slot.set_accepting(!self.stopping);
        }
        loop {
            if self.stopping && self.conns.is_empty() && self.listeners.iter().all(Option::is_none)
            {
                return;
            }
            let now = Instant::now();
            let timeout = if self.accept_pending && self.conns.len() < self.settings.max_connections
            {
                self.accept_retry_at
                    .saturating_duration_since(now)
                    .min(SWEEP)
            } else {
                SWEEP
            };
            let draining = self.stopping && self.listeners.iter().any(Option::is_some);
            // The master's shutdown of a drained socket may wake nobody here.
            let timeout = if draining {
                timeout.min(DRAIN_CHECK)
            } else {
                timeout
            };
            let poll = &mut self.poll;
            let result = self.py.detach(|| poll.poll(&mut events, Some(timeout)));
            if let Err(e) = result {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("worker poll failed: {e}");
                    return;
                }
            }
            self.now = Instant::now();
            self.date.refresh(SystemTime::now());
            if let Some(slot) = self.tracked_slot() {
                slot.beat();
            }
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => self.on_signals(),
                    WAKER_TOKEN => self.on_shared_change(),
                    Token(t)
                        if t > FIRST_LISTENER - self.listeners.len() && t <= FIRST_LISTENER =>
                    {
                        self.accept_from(FIRST_LISTENER - t, false)
                    }
                    Token(key) => {
                        if event.is_read_closed() || event.is_error() {
                            if let Some(conn) = self.conns.get_mut(key) {
                                conn.hangup_seen = true;
                            }
                        }
                        self.drive(key, false)
                    }
                }
            }
            if draining {
                self.settle_listeners();
                // Whatever the shares: what is queued is taken (a deferred accept
                // whose retry each turn pushed back would otherwise never come).
                for i in 0..self.listeners.len() {
                    self.accept_from(i, true);
                }
            }
            if self.accept_pending && Instant::now() >= self.accept_retry_at {
                self.accept_pending = false;
                // Only connections left to the peers are taken regardless of the
                // share; a batch that merely ran out goes on as usual.
                let anyway = std::mem::take(&mut self.accept_deferred);
                for i in 0..self.listeners.len() {
                    self.accept_from(i, anyway);
                }
            }
            self.flush_deferred();
            self.access.flush();
            if self.last_sweep.elapsed() >= SWEEP {
                self.sweep();
            }
        }
    }

    fn on_signals(&mut self) {
        let delivered = self
            .signals
            .as_ref()
            .map(SelfPipe::drain)
            .unwrap_or_default();
        for d in delivered {
            match d.signal {
                Signal::SIGTERM => {
                    let from_master =
                        d.sender.map(|p| p.as_raw()) == Some(self.settings.master_pid);
                    self.begin_stop("SIGTERM", !from_master)
                }
                Signal::SIGUSR1 => {
                    self.shared.reopen.fetch_add(1, Ordering::SeqCst);
                    self.shared.wake_all();
                }
                // HUP, USR2, TTIN, TTOU and WINCH are the master's business.
                other => debug!("worker ignores {}", other.as_str()),
            }
        }
    }

    /// Another loop of this worker asked for a stop or a log reopen.
    fn on_shared_change(&mut self) {
        if self.shared.stop.load(Ordering::SeqCst) {
            self.begin_stop("stop of another loop", true);
        }
        let generation = self.shared.reopen.load(Ordering::SeqCst);
        if generation != self.reopened {
            self.reopened = generation;
            self.reopen_logs();
        }
    }

    /// USR1 (forwarded by the master): reopen the log files, e.g. after logrotate.
    fn reopen_logs(&mut self) {
        if let Err(e) = self.access.reopen() {
            error!("cannot reopen the access log: {e}");
        }
        if let Some(path) = &self.error_log {
            // --capture-output made stdout the error log too: it follows.
            let captured = same_file(&std::io::stdout(), &std::io::stderr());
            if let Err(e) = ferricorn_log::redirect_stderr(path, None) {
                error!("cannot reopen the error log {path}: {e}");
            } else if captured {
                if let Err(e) = nix::unistd::dup2_stdout(std::io::stderr()) {
                    error!("--capture-output: cannot redirect stdout: {e}");
                }
            }
        }
    }

    /// Graceful stop: no new connections; idle ones close; requests in progress
    /// finish and their responses say `Connection: close`.
    fn begin_stop(&mut self, why: &str, wait_for_master: bool) {
        if self.stopping {
            return;
        }
        // A process-group TERM during the master's drain delay: serving on is
        // what the master asked for; it sends its own TERM when the delay ends.
        if wait_for_master && self.board.as_ref().is_some_and(|(b, _)| b.draining()) {
            debug!("{why} during the drain delay: the master stops this worker when it ends");
            return;
        }
        self.stopping = true;
        if let Some(slot) = self.slot() {
            slot.set_accepting(false);
        }
        // The other loops of this worker (--threads) stop with this one.
        if !self.shared.stop.swap(true, Ordering::SeqCst) {
            self.shared.wake_all();
        }
        debug!(
            "worker stopping ({why}), {} connections open",
            self.conns.len()
        );
        // Whether the whole server stops (then this worker drains the queue) or
        // only this worker does is read off the sockets (see `settle_listeners`).
        // A TERM not from the master (a process-group kill) may come before the
        // master's: it gets a moment to say which.
        self.stop_undecided_until = Instant::now()
            + if wait_for_master {
                GROUP_STOP_WAIT
            } else {
                Duration::ZERO
            };
        self.settle_listeners();
        // Idle connections are not closed at once: a keep-alive client may be sending
        // its next request right now, and closing under it loses that request. They
        // get a short grace; a request that comes is answered with
        // `Connection: close`.
        let now = Instant::now();
        for (_, c) in self.conns.iter_mut() {
            if c.is_idle() {
                c.deadline = c.deadline.min(now + STOP_GRACE);
            }
        }
    }

    /// While stopping: a socket that admits no new connections means the whole
    /// server is stopping: take what the kernel already queued (the master shuts
    /// the socket down once it is empty). Otherwise, once the stop is decided,
    /// only this worker is leaving (a reload, a recycle, fewer workers) and its
    /// peers take the queue.
    fn settle_listeners(&mut self) {
        if Instant::now() < self.stop_undecided_until {
            self.cancel_stop_for_drain_delay();
            return;
        }
        for l in self.listeners.iter_mut() {
            if l.as_ref()
                .is_some_and(|l| !closing::refusing_new_connections(l))
            {
                if let Some(mut l) = l.take() {
                    let _ = self.poll.registry().deregister(&mut l);
                }
            }
        }
    }

    /// A TERM from outside (a process group's) that the master answered with
    /// its drain delay: this worker serves on, as the master asked.
    fn cancel_stop_for_drain_delay(&mut self) {
        if !self.board.as_ref().is_some_and(|(b, _)| b.draining()) {
            return;
        }
        debug!("the master holds the stop for its drain delay: serving on");
        self.stopping = false;
        self.stop_undecided_until = Instant::now();
        self.shared.stop.store(false, Ordering::SeqCst);
        if let Some(slot) = self.slot() {
            slot.set_accepting(true);
        }
    }

    fn slot(&self) -> Option<&Slot> {
        self.board.as_ref().and_then(|(b, i)| b.slot(*i))
    }

    fn tracked_slot(&self) -> Option<&Slot> {
        self.slot().filter(|_| self.tracks_requests)
    }

    /// Take connections from listener `i` (see `accept_some`) and, when accepts
    /// are deferred until data arrives, answer them at once.
    fn accept_from(&mut self, i: usize, first_anyway: bool) {
        self.accept_some(i, first_anyway);
        // With deferred accepts the request is already there: answering it now
        // saves a turn of the loop (and its wait) per new connection.
        let mut accepted = std::mem::take(&mut self.just_accepted);
        if self.settings.read_at_accept {
            for &key in &accepted {
                self.drive(key, false);
            }
        }
        accepted.clear();
        self.just_accepted = accepted;
    }

    /// Take connections from listener `i` into `just_accepted`: up to the batch,
    /// while this worker is not over its fair share; with `first_anyway` (a
    /// connection left to the peers is still waiting after `ACCEPT_DEFER`) the
    /// first regardless. One at a time: on a loaded machine a peer may simply not
    /// have run yet, and taking the whole queue then undoes the balance (a test
    /// saw 34/6).
    fn accept_some(&mut self, i: usize, first_anyway: bool) {
        for n in 0..self.settings.accept_batch.max(1) {
            if self.conns.len() >= self.settings.max_connections {
                self.accept_pending = true;
                return;
            }
            let over = self
                .board
                .as_ref()
                .is_some_and(|(b, me)| b.over_fair_share(*me))
                || self.shared.loop_over_share(&self.load);
            if over && !(first_anyway && n == 0) {
                self.accept_pending = true;
                self.accept_deferred = true;
                self.accept_retry_at = Instant::now() + ACCEPT_DEFER;
                return;
            }
            let Some(listener) = self.listeners.get(i).and_then(Option::as_ref) else {
                return;
            };
            match listener.accept(self.settings.tls.as_ref()) {
                Ok((sock, peer, local)) => {
                    // A TLS handshake is the start of the first head: the header
                    // timeout bounds a client that stalls it, if it is the shorter.
                    let wait = if sock.is_tls() {
                        self.settings.keepalive.min(self.settings.header_timeout)
                    } else {
                        self.settings.keepalive
                    };
                    let deadline = Instant::now() + wait;
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let mut conn = Conn::new(sock, peer, local, deadline);
                    if let Some(buf) = self.spare_bufs.pop() {
                        conn.inbuf = InBuf::with_spare(buf);
                    }
                    if self
                        .poll
                        .registry()
                        .register(&mut conn.sock, Token(key), Interest::READABLE)
                        .is_ok()
                    {
                        entry.insert(conn);
                        self.just_accepted.push(key);
                        if let Some(slot) = self.slot() {
                            slot.add_conns(1);
                        }
                        self.load.conns.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A stopping server's unix socket refuses new connections:
                    // once its queue is empty, nothing more can come.
                    if self.stopping
                        && listener.is_unix()
                        && closing::refusing_new_connections(listener)
                    {
                        if let Some(mut l) = self.listeners[i].take() {
                            let _ = self.poll.registry().deregister(&mut l);
                        }
                    }
                    return;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The master shut the socket down: a stop is under way.
                    if let Some(mut l) = self.listeners[i].take() {
                        let _ = self.poll.registry().deregister(&mut l);
                    }
                    return;
                }
                Err(e) => {
                    // EMFILE and friends: retry shortly rather than spin.
                    self.accept_errors.record(&e);
                    self.accept_pending = true;
                    self.accept_retry_at = Instant::now() + Duration::from_millis(100);
                    return;
                }
            }
        }
        self.accept_pending = true;
    }

    /// Write the answers held back during this turn. They go out together once
    /// every ready connection had its turn (as bjoern does): a client woken
    /// once takes several, instead of being woken (an inter-processor interrupt
    /// under a VM) per response. For the Flask benchmark app this took half of
    /// the kernel time per request away. The cost: an answer waits for the app
    /// calls after it in the same turn. That is why it is done only while the
    /// app averages under [`FAST_APP`] per request, and for at most
    /// [`DEFER_LIMIT`] of app calls; a rare slow request among fast ones still
    /// delays the answers held back just before it.
    fn flush_deferred(&mut self) {
        self.deferred_since = None;
        for key in std::mem::take(&mut self.deferred) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.flush_deferred = false;
                self.drive(key, true);
            }
        }
    }

    /// Before an app call: answers held back for [`DEFER_LIMIT`] go out now.
    fn flush_stale_deferred(&mut self) {
        let now = self.now;
        if self
            .deferred_since
            .is_some_and(|t| now.saturating_duration_since(t) >= DEFER_LIMIT)
        {
            self.flush_deferred();
        }
    }

    /// Move a connection forward as far as it goes now: read, answer complete
    /// requests, write. `flushing`: the deferred write of what an earlier call
    /// answered.
    fn drive(&mut self, key: usize, flushing: bool) {
        let mut first = true;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if !(flushing && first) {
                if conn.phase == Phase::Lingering {
                    if discard_input(conn) {
                        self.close(key);
                    }
                    return;
                }
                if read_available(conn, &self.settings, self.now).is_err() {
                    self.close(key);
                    return;
                }
                self.process(key);
            }
            let defer = !flushing && first && self.app_time < FAST_APP;
            first = false;
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if defer && conn.out.pending() > 0 && !conn.want_write {
                if !conn.flush_deferred {
                    conn.flush_deferred = true;
                    self.deferred.push(key);
                    self.deferred_since.get_or_insert(self.now);
                }
                return;
            }
            match conn.out.flush(self.py, &mut conn.sock) {
                Err(e) => {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        warn!("client {}: {e}; closing the connection", conn.peer);
                    }
                    self.close(key);
                    return;
                }
                Ok(false) => {
                    if !conn.want_write {
                        conn.want_write = true;
                        let _ = self.poll.registry().reregister(
                            &mut conn.sock,
                            Token(key),
                            Interest::READABLE | Interest::WRITABLE,
                        );
                    }
                    conn.deadline = Instant::now() + self.settings.body_timeout;
                    return;
                }
                Ok(true) => {
                    if conn.parked.is_some() {
                        // The client took it all: the app's iteration goes on.
                        self.resume(key);
                        continue;
                    }
                    if conn.want_write {
                        conn.want_write = false;
                        let _ = self.poll.registry().reregister(
                            &mut conn.sock,
                            Token(key),
                            Interest::READABLE,
                        );
                    }
                    if conn.close_after_flush {
                        if conn.close_at_once {
                            self.close(key);
                            return;
                        }
                        start_linger(conn);
                        continue;
                    }
                    if conn.peer_closed && conn.phase == Phase::Head {
                        // Nothing more will come; a partial head cannot be answered.
                        self.close(key);
                        return;
                    }
                    // A TLS handshake under way keeps the deadline it had from
                    // the accept (the header timeout): a stalled one is not idle.
                    if conn.is_idle() && !conn.sock.is_handshaking() {
                        conn.deadline = self.now + self.settings.keepalive;
                        if self.stopping {
                            if conn.served > 0 {
                                self.close(key);
                                return;
                            }
                            // Taken from the queue during the stop: its request
                            // may be on the way.
                            conn.deadline = conn.deadline.min(self.now + STOP_GRACE);
                        }
                    }
                    if conn.read_pending {
                        continue;
                    }
                    return;
                }
            }
        }
    }

    /// Answer every complete request buffered on the connection, in order.
    fn process(&mut self, key: usize) {
        loop {
            self.flush_stale_deferred();
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.close_after_flush || conn.parked.is_some() || conn.out.pending() >= HIGH_WATER {
                return;
            }
            match conn.phase {
                Phase::Lingering => return,
                Phase::Head => {
                    if conn.inbuf.is_empty() {
                        return;
                    }
                    if let Some(allowed) =
                        self.settings.proxy.as_ref().filter(|_| !conn.proxy_checked)
                    {
                        match parse_proxy(conn.inbuf.bytes()) {
                            Ok(ProxyParsed::Partial) => return,
                            Ok(ProxyParsed::Absent) => conn.proxy_checked = true,
                            Ok(ProxyParsed::Present(_, _)) if !conn.peer.allowed_by(allowed) => {
                                reject(conn, HttpError::ProxyForbidden, &self.date);
                                return;
                            }
                            Ok(ProxyParsed::Present(source, len)) => {
                                if let ProxySource::Client(client) = source {
                                    conn.peer = Peer::Ip(client);
                                }
                                conn.inbuf.consume(len);
                                conn.proxy_checked = true;
                                continue;
                            }
                            Err(e) => {
                                reject(conn, e, &self.date);
                                return;
                            }
                        }
                    }
                    let limits = &self.settings.limits;
                    let parsed = if limits.permit_obs_fold {
                        parse_head_unfolding(conn.inbuf.bytes_mut(), limits, &mut conn.head)
                    } else {
                        parse_head(conn.inbuf.bytes(), limits, &mut conn.head)
                    };
                    match parsed {
                        Ok(Parsed::Partial) => return,
                        Err(e) => {
                            reject(conn, e, &self.date);
                            return;
                        }
                        Ok(Parsed::Complete) => {
                            conn.phase = Phase::Body;
                            conn.deadline = self.now + self.settings.body_timeout;
                            match conn.head.framing {
                                Framing::Chunked => {
                                    conn.chunked = Some((
                                        ChunkedDecoder::new(self.settings.limits.max_body),
                                        0,
                                    ))
                                }
                                Framing::Length(n) if n > self.settings.limits.max_body => {
                                    reject(conn, HttpError::BodyTooLarge, &self.date);
                                    return;
                                }
                                _ => {}
                            }
                        }
                    }
                }
                Phase::Body => {
                    let end = match body_end(conn) {
                        Ok(end) => end,
                        Err(e) => {
                            reject(conn, e, &self.date);
                            return;
                        }
                    };
                    if end.is_none() && !should_stream(conn, self.settings.body_buffer) {
                        return;
                    }
                    // A stop that arrived while the app ran still closes this
                    // connection, as does a stop's drain delay.
                    let stopping = self.stopping
                        || stop_pending(&self.shared, self.signals.as_ref())
                        || self.board.as_ref().is_some_and(|(b, _)| b.draining());
                    let started = Instant::now();
                    let ctx = Ctx {
                        started,
                        py: self.py,
                        app: &mut self.app,
                        date: &self.date,
                        scratch: &mut self.scratch,
                        stopping,
                        signals: self.signals.as_ref(),
                        shared: &self.shared,
                        slot: self
                            .board
                            .as_ref()
                            .filter(|_| self.tracks_requests)
                            .and_then(|(b, i)| b.slot(*i)),
                        counts: self.board.as_ref().and_then(|(b, i)| b.slot(*i)),
                        access: &mut self.access,
                        trusted: &self.settings.trusted,
                        body_timeout: self.settings.body_timeout,
                    };
                    self.load.in_app.store(true, Ordering::Relaxed);
                    let exit = dispatch(ctx, conn, end);
                    self.load.in_app.store(false, Ordering::Relaxed);
                    // A moving average of the app's time per request (1/8 weight).
                    let ended = Instant::now();
                    let took = ended.saturating_duration_since(started);
                    self.now = ended;
                    self.app_time = self.app_time - self.app_time / 8 + took / 8;
                    if exit {
                        self.begin_stop("the app raised SystemExit", false);
                    }
                    self.count_request();
                }
            }
        }
    }

    /// Go on with the paused response of connection `key`, whose client has
    /// taken everything sent so far.
    fn resume(&mut self, key: usize) {
        let py = self.py;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(parked) = conn.parked.take() else {
            return;
        };
        let Parked {
            call,
            progress,
            request,
            started,
            client_said_close,
        } = *parked;
        let slot = self
            .board
            .as_ref()
            .filter(|_| self.tracks_requests)
            .and_then(|(b, i)| b.slot(*i));
        let info = progress.info;
        let mut responder = Responder::new(
            py,
            &mut conn.out,
            &mut conn.sock,
            &self.date,
            &mut self.scratch,
            info,
        )
        .resumed(progress);
        let counts = self.board.as_ref().and_then(|(b, i)| b.slot(*i));
        if let Some(slot) = slot {
            slot.enter_request(&request.method, &request.target);
        }
        counts.inspect(|c| c.enter_app());
        self.load.in_app.store(true, Ordering::Relaxed);
        let result = self.app.resume(py, call, &mut responder);
        self.load.in_app.store(false, Ordering::Relaxed);
        counts.inspect(|c| c.leave_app());
        if let Some(slot) = slot {
            slot.leave_request();
        }
        let mut settled = Settled::default();
        match result {
            Ok(Outcome::Paused(call)) => {
                conn.parked = Some(Box::new(Parked {
                    call,
                    progress: responder.suspend(),
                    request,
                    started,
                    client_said_close,
                }));
                return;
            }
            Ok(Outcome::Done) => {
                if self.stopping || stop_pending(&self.shared, self.signals.as_ref()) {
                    responder.keep_alive = false;
                }
                let _ = responder.finish();
            }
            Err(e) => {
                settled = settle_error(
                    e,
                    &mut responder,
                    &request.method,
                    &request.target,
                    conn.peer,
                )
            }
        }
        warn_problem(&mut responder, &request.method, &request.target);
        let elapsed = started.elapsed();
        ferricorn_log::statsd::request(responder.status, elapsed);
        counts.inspect(|c| c.count_response(&request.method, responder.status, elapsed));
        if self.access.enabled() {
            let headers: Vec<(&[u8], &[u8])> = request
                .headers
                .iter()
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .collect();
            self.access.record(&Entry {
                peer: conn.peer,
                method: &request.method,
                target: &request.target,
                minor_version: request.minor_version,
                request_headers: &headers,
                status: responder.status,
                response_headers: responder.log_headers.as_deref().unwrap_or(&[]),
                body_bytes: responder.body_bytes,
                elapsed,
            });
        }
        let keep_alive = responder.keep_alive && !settled.client_gone;
        drop(responder);
        after_response(conn, keep_alive, settled.client_gone, client_said_close);
        if settled.exit {
            self.begin_stop("the app raised SystemExit", false);
        }
    }

    /// `--max-requests`: once reached, ask the master for a replacement (once) and
    /// keep serving until it sends TERM.
    fn count_request(&mut self) {
        // Counted across every loop of the worker; exactly one loop sees the limit.
        let served = self.shared.served.fetch_add(1, Ordering::SeqCst) + 1;
        if self.max_requests == Some(served) {
            log::info!(
                "Worker reached --max-requests ({served} requests); asking for a replacement"
            );
            let _ = self.status.write_all(&Report::Recycle.encode());
        }
    }

    /// Close what has passed its deadline; notice a vanished master.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.last_sweep = now;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            if let Some(c) = self.conns.get(key) {
                if c.phase != Phase::Lingering && !c.is_idle() {
                    debug!(
                        "closing connection from {}: timed out in {:?}",
                        c.peer, c.phase
                    );
                }
            }
            self.close(key);
        }
        if !self.stopping {
            if let Some(path) = self.reloader.as_ref().and_then(|r| r.changed()) {
                log::info!("Worker reloading: {} modified", path.display());
                self.begin_stop("--reload", false);
            }
        }
        if !self.stopping && nix::unistd::getppid().as_raw() != self.settings.master_pid {
            warn!(
                "master (pid {}) is gone; stopping",
                self.settings.master_pid
            );
            self.begin_stop("master gone", false);
        }
    }

    fn close(&mut self, key: usize) {
        if self.conns.contains(key) {
            // Closing the socket takes it out of epoll: no deregister call needed.
            let mut conn = self.conns.remove(key);
            if let Some(parked) = conn.parked.take() {
                // close() and post_request run for a response that cannot finish.
                self.app.abandon(self.py, parked.call);
            }
            if self.spare_bufs.len() < SPARE_BUFS {
                if let Some(buf) = conn.inbuf.into_spare() {
                    self.spare_bufs.push(buf);
                }
            }
            if let Some(slot) = self.slot() {
                slot.add_conns(-1);
            }
            self.load.conns.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Read until the socket is empty, the peer closes, or backpressure says stop.
/// `now`: the loop's time as last read, for the deadlines.
/// Whether two descriptors refer to the same open file's inode.
fn same_file(a: &impl std::os::fd::AsFd, b: &impl std::os::fd::AsFd) -> bool {
    match (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

fn read_available(conn: &mut Conn, settings: &Settings, now: Instant) -> io::Result<()> {
    conn.read_pending = false;
    while !conn.peer_closed {
        let buffered_ahead = conn.phase == Phase::Head && conn.inbuf.len() >= READ_CAP;
        if conn.out.pending() >= HIGH_WATER || buffered_ahead || conn.close_after_flush {
            conn.read_pending = !conn.close_after_flush;
            return Ok(());
        }
        let was_empty = conn.inbuf.is_empty();
        match conn.inbuf.read_from(&mut conn.sock) {
            Ok((0, _)) => conn.peer_closed = true,
            Ok((_, filled)) => {
                match conn.phase {
                    // The header timeout runs from a head's first byte and is not
                    // extended by trickling bytes.
                    Phase::Head if was_empty => conn.deadline = now + settings.header_timeout,
                    Phase::Body => conn.deadline = now + settings.body_timeout,
                    _ => {}
                }
                // A short read emptied the socket: whatever arrives later raises
                // a new edge, so the read that would say WouldBlock (a third of a
                // keep-alive request's system calls) is skipped. Not when the
                // event said the peer closed: then only reading finds the end.
                if !filled && !conn.hangup_seen {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where the current request's body ends in the input, once it is all there.
fn body_end(conn: &mut Conn) -> Result<Option<usize>, HttpError> {
    let head_len = conn.head.len;
    match conn.head.framing {
        Framing::None => Ok(Some(head_len)),
        Framing::Length(n) => {
            let end = head_len.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
            Ok((conn.inbuf.len() >= end).then_some(end))
        }
        Framing::Chunked => {
            let Some((decoder, fed)) = conn.chunked.as_mut() else {
                return Ok(Some(head_len));
            };
            let input = &conn.inbuf.bytes()[head_len + *fed..];
            let (used, status) = decoder.decode(input, &mut conn.body)?;
            *fed += used;
            Ok(matches!(status, ChunkStatus::Done).then_some(head_len + *fed))
        }
    }
}

/// Call the app before the body is all here: the client waits for
/// `100 Continue` (RFC 9110 §10.1.1: sent when the app first reads), or the body
/// is larger than the worker buffers.
fn should_stream(conn: &Conn, body_buffer: usize) -> bool {
    let received = conn.inbuf.len() - conn.head.len;
    // wsgi.input reads the raw socket, which on a TLS connection carries
    // ciphertext: such a body is received whole by the loop first.
    if conn.sock.is_tls() {
        return false;
    }
    match conn.head.framing {
        Framing::None => false,
        _ if conn.head.expect_continue && received == 0 => true,
        Framing::Length(n) => n > body_buffer as u64,
        Framing::Chunked => conn.body.len() > body_buffer,
    }
}

/// A stop arrived that this loop has not acted on yet.
pub fn stop_pending(shared: &Shared, signals: Option<&SelfPipe>) -> bool {
    shared.stop.load(Ordering::SeqCst) || signals.is_some_and(|s| s.is_pending(Signal::SIGTERM))
}

/// Answer a request that cannot be served, then close: the bytes after it cannot
/// be trusted to start a request (that is how smuggling works).
pub fn reject(conn: &mut Conn, e: HttpError, date: &HttpDate) {
    debug!(
        "bad request from {}: {e:?} ({} {})",
        conn.peer,
        e.status(),
        e.reason()
    );
    write_error(conn.out.end(), e.status(), e.reason(), date);
    conn.close_after_flush = true;
}

fn start_linger(conn: &mut Conn) {
    let _ = conn.sock.shutdown(std::net::Shutdown::Write);
    conn.phase = Phase::Lingering;
    conn.deadline = Instant::now() + LINGER;
    let n = conn.inbuf.len();
    conn.inbuf.consume(n);
}

/// Read and drop input of a lingering connection; true once it can be closed.
fn discard_input(conn: &mut Conn) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match io::Read::read(&mut conn.sock, &mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}
