//! The scoreboard: one page per worker in memory shared by the master and its
//! workers (a memfd the master maps before the first fork, and hands to the next
//! binary across a USR2 exec, like the listening sockets).
//!
//! A worker writes a few atomics per request — no syscall, unlike gunicorn's
//! per-request `utime` of a temp file — and the master reads them to find a worker
//! stuck in a request or in its loop, and to say how many requests were in flight
//! when a stop began.
//!
//! Workers run the app, so the board is untrusted input to the master. Right
//! after the fork a worker swaps its inherited mapping for a read-only one, with
//! only its own slot's page writable (see [`Scoreboard::restrict_to`]); the master
//! does every assignment itself, and bounds what it reads (see [`Slot::in_request`]).
//!
//! The slot also holds the worker's request counters for `--metrics-bind`
//! (`ferricorn-master`'s metrics module): a few relaxed adds per response, read
//! by the master, which folds a dead worker's last counts into its own totals
//! before the slot is assigned again (see [`Counts`]).
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::time::{clock_gettime, ClockId};

/// A worker in the app longer than this no longer counts as a peer that will
/// take the next connection soon (see [`Scoreboard::over_fair_share`]).
const STUCK_MS: u64 = 20;

/// Bytes of "METHOD target" kept for the timeout log line.
const LINE_WORDS: usize = 8;

/// The request methods counted apart (the last, `other`, counts the rest), so a
/// client cannot make the master keep a series per method it invents.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
/// Status classes, by the status code's first digit (anything outside 100-599,
/// which a response head never carries, counts as 5xx).
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds, in µs, of the request-duration histogram's buckets; one more
/// bucket after them takes the rest (+Inf).
pub const DURATION_BUCKETS_US: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];
const RESPONSE_KINDS: usize = METHODS.len() * STATUS_CLASSES.len();
const BUCKETS: usize = DURATION_BUCKETS_US.len() + 1;
/// The most one slot may contribute to any counter, and to requests in flight:
/// far above what a worker does in its life (2^48 requests is 9 years at a
/// million a second), so only a worker writing nonsense meets it, and the
/// master's sums of such values cannot overflow.
const MAX_COUNT: u64 = 1 << 48;
const MAX_IN_APP: u64 = 1 << 20;

/// One worker's entry, alone on its page (the unit a mapping's protection has).
/// All fields are atomics, so any bit pattern (including the zeroes a fresh
/// mapping holds) is valid, and both processes may touch them.
#[repr(C, align(128))]
pub struct Slot {
    /// Monotonic ms of the worker loop's last turn.
    beat_ms: AtomicU64,
    /// Monotonic ms when the current request was handed to the app; 0 = not in the app.
    busy_since_ms: AtomicU64,
    /// Requests completed by this worker.
    requests: AtomicU64,
    line: [AtomicU64; LINE_WORDS],
    /// Connections the worker holds open (all its loops).
    conns: AtomicU64,
    /// 1 while the worker accepts connections (ready, not stopping).
    accepting: AtomicU64,
    /// Calls into the app under way, in all the worker's loops.
    in_app: AtomicU64,
    /// Responses by status class and method (`class * METHODS.len() + method`).
    responses: [AtomicU64; RESPONSE_KINDS],
    /// Request durations per bucket (not cumulative; the last is +Inf).
    duration_buckets: [AtomicU64; BUCKETS],
    duration_sum_us: AtomicU64,
}

/// What a slot's counters say, as the master read them: each bounded, so sums of
/// them saturate rather than wrap (see [`MAX_COUNT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// By status class and method: `responses[class][method]`.
    pub responses: [[u64; METHODS.len()]; STATUS_CLASSES.len()],
    /// Per bucket of [`DURATION_BUCKETS_US`], not cumulative; the last is +Inf.
    pub duration_buckets: [u64; BUCKETS],
    pub duration_sum_us: u64,
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            responses: [[0; METHODS.len()]; STATUS_CLASSES.len()],
            duration_buckets: [0; BUCKETS],
            duration_sum_us: 0,
        }
    }
}

impl Counts {
    fn each_mut(&mut self) -> impl Iterator<Item = &mut u64> {
        self.responses
            .iter_mut()
            .flatten()
            .chain(self.duration_buckets.iter_mut())
            .chain(std::iter::once(&mut self.duration_sum_us))
    }

    fn each(&self) -> impl Iterator<Item = u64> + '_ {
        self.responses
            .iter()
            .flatten()
            .chain(self.duration_buckets.iter())
            .chain(std::iter::once(&self.duration_sum_us))
            .copied()
    }

    /// Add `other` to these, saturating.
    pub fn add(&mut self, other: &Counts) {
        for (mine, theirs) in self.each_mut().zip(other.each()) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// Each counter the larger of the two: what the master keeps of a live
    /// worker's counts, so that a worker that lowers its own counters cannot
    /// make a total go down.
    pub fn raise_to(&mut self, other: &Counts) {
        for (mine, theirs) in self.each_mut().zip(other.each()) {
            *mine = (*mine).max(theirs);
        }
    }

    /// Requests counted.
    pub fn requests(&self) -> u64 {
        self.duration_buckets
            .iter()
            .fold(0u64, |n, b| n.saturating_add(*b))
    }
}

/// The index of `method` in [`METHODS`].
fn method_index(method: &[u8]) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| m.as_bytes() == method)
        .unwrap_or(METHODS.len() - 1)
}

/// The index of `status`'s class in [`STATUS_CLASSES`].
fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => STATUS_CLASSES.len() - 1,
    }
}

/// The bucket of a request that took `us` µs.
fn bucket_index(us: u64) -> usize {
    DURATION_BUCKETS_US.partition_point(|&bound| bound < us)
}

/// The page after the last slot, written by the master only.
#[repr(C)]
struct Header {
    /// How many slots from the first may belong to a worker (the highest ever
    /// assigned, plus one).
    span: AtomicU64,
    /// 1 while a stop's `--drain-delay` runs: workers serve on, closing each
    /// connection after its response.
    draining: AtomicU64,
}

/// Milliseconds of `CLOCK_MONOTONIC`, the same clock in every process of the machine.
pub fn now_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

impl Slot {
    /// Worker: the loop is alive.
    pub fn beat(&self) {
        self.beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Worker: about to call the app for `method target`.
    pub fn enter_request(&self, method: &[u8], target: &[u8]) {
        let mut bytes = [0u8; LINE_WORDS * 8];
        for (dst, &b) in bytes
            .iter_mut()
            .zip(method.iter().chain(b" ").chain(target))
        {
            *dst = b;
        }
        for (i, word) in self.line.iter().enumerate() {
            let chunk: [u8; 8] = bytes[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]);
            word.store(u64::from_ne_bytes(chunk), Ordering::Relaxed);
        }
        let now = now_ms();
        self.beat_ms.store(now, Ordering::Relaxed);
        self.busy_since_ms.store(now.max(1), Ordering::Release);
    }

    /// Worker: the app returned.
    pub fn leave_request(&self) {
        self.busy_since_ms.store(0, Ordering::Release);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Worker, any loop: a call into the app (or into its response iterator)
    /// begins; [`Slot::leave_app`] when it returns.
    pub fn enter_app(&self) {
        self.in_app.fetch_add(1, Ordering::Relaxed);
    }

    pub fn leave_app(&self) {
        self.in_app.fetch_sub(1, Ordering::Relaxed);
    }

    /// Worker, any loop: a response is complete (as the access log records it):
    /// three relaxed adds.
    pub fn count_response(&self, method: &[u8], status: u16, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let kind = class_index(status) * METHODS.len() + method_index(method);
        self.responses[kind].fetch_add(1, Ordering::Relaxed);
        self.duration_buckets[bucket_index(us)].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Master: the worker's counters, each bounded (see [`MAX_COUNT`]).
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        let read = |a: &AtomicU64| a.load(Ordering::Relaxed).min(MAX_COUNT);
        for (dst, src) in counts.responses.iter_mut().flatten().zip(&self.responses) {
            *dst = read(src);
        }
        for (dst, src) in counts
            .duration_buckets
            .iter_mut()
            .zip(&self.duration_buckets)
        {
            *dst = read(src);
        }
        // µs: 2^48 requests of a second each would still fit 2^62.
        counts.duration_sum_us = self.duration_sum_us.load(Ordering::Relaxed).min(1 << 62);
        counts
    }

    /// Master: calls into the app under way (bounded: a worker that leaves
    /// more calls than it entered wraps the counter, which reads as the bound).
    pub fn in_app(&self) -> u64 {
        self.in_app.load(Ordering::Relaxed).min(MAX_IN_APP)
    }

    /// Master: (ms in the current request, "METHOD target") if the worker is in
    /// the app. The worker wrote all of it: the time is bounded by when the master
    /// assigned the slot (`assigned_ms`) and now, so a lie can only shorten or
    /// lengthen what the worker reports about itself, up to its real age; the
    /// line is escaped, so it cannot put control bytes or a newline into a log.
    pub fn in_request(&self, now: u64, assigned_ms: u64) -> Option<(u64, String)> {
        let since = self.busy_since_ms.load(Ordering::Acquire);
        if since == 0 {
            return None;
        }
        let mut bytes = Vec::with_capacity(LINE_WORDS * 8);
        for word in &self.line {
            bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        // The worker may be rewriting the line as we read it; it is only for a log line.
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Some((
            elapsed(since, assigned_ms, now),
            bytes[..end].escape_ascii().to_string(),
        ))
    }

    /// ms in the current request, as a peer worker sees it (for balancing only).
    fn in_request_for(&self, now: u64) -> Option<u64> {
        let since = self.busy_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| now.saturating_sub(since))
    }

    /// Master: ms since the worker last showed life (its loop turned or it
    /// entered a request), bounded as in [`Slot::in_request`].
    pub fn silent_for(&self, now: u64, assigned_ms: u64) -> u64 {
        elapsed(self.beat_ms.load(Ordering::Relaxed), assigned_ms, now)
    }

    /// Worker: a connection was accepted (+1) or closed (-1).
    pub fn add_conns(&self, delta: i64) {
        if delta >= 0 {
            self.conns.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.conns
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    pub fn conns(&self) -> u64 {
        self.conns.load(Ordering::Relaxed)
    }

    /// Worker: whether it takes new connections.
    pub fn set_accepting(&self, on: bool) {
        self.accepting.store(u64::from(on), Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Master: clear what the last owner left (before the new owner is forked).
    fn clear(&self, now: u64) {
        self.busy_since_ms.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
        self.conns.store(0, Ordering::Relaxed);
        self.accepting.store(0, Ordering::Relaxed);
        self.in_app.store(0, Ordering::Relaxed);
        for c in self
            .responses
            .iter()
            .chain(&self.duration_buckets)
            .chain(std::iter::once(&self.duration_sum_us))
        {
            c.store(0, Ordering::Relaxed);
        }
        self.beat_ms.store(now, Ordering::Relaxed);
    }
}

/// ms from a worker-written timestamp `at` to `now`, with `at` held between the
/// slot's assignment and now: a timestamp from the future counts as now, one from
/// before the worker existed as its start.
fn elapsed(at: u64, assigned_ms: u64, now: u64) -> u64 {
    now.saturating_sub(at.clamp(assigned_ms.min(now), now))
}

/// Whether `mine` of `total` connections, over `peers` takers (this one
/// included), is more than one above the average: then this taker should
/// leave the next connection to the others. Saturating: the counts come from
/// other workers' slots.
pub fn over_share(mine: u64, total: u64, peers: u64) -> bool {
    peers >= 2 && mine.saturating_mul(peers) > total.saturating_add(peers)
}

/// The master's descriptors of the board: the memfd, and the same file opened
/// read-only, from which a worker maps it without the right to write (a shared
/// mapping of a read-only fd cannot be made writable by `mprotect`, nor written
/// through /proc/self/mem).
struct BoardFds {
    rw: File,
    ro: File,
}

/// The shared table of slots.
pub struct Scoreboard {
    base: NonNull<u8>,
    len: usize,
    /// Bytes from one slot to the next: a page.
    stride: usize,
    /// The master's (None in a worker, once restricted).
    fds: Option<BoardFds>,
}

// SAFETY: the mapping is only ever accessed through `&Slot` and `&Header`, whose
// fields are all atomics (built for sharing, across threads as across processes);
// the pointer itself is never written after the mapping is made.
unsafe impl Send for Scoreboard {}
// SAFETY: as for Send: every access is an atomic operation.
unsafe impl Sync for Scoreboard {}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .filter(|p| p.is_power_of_two() && *p >= std::mem::size_of::<Slot>())
        .unwrap_or(4096)
}

/// `len` slots and the header, a page each.
fn board_bytes(len: usize, stride: usize) -> usize {
    (len + 1) * stride
}

/// Map `bytes` of `fd` from offset `offset`, shared, at `at` (replacing what is
/// mapped there) or wherever the kernel puts it.
///
/// # Safety
/// With `at`, the range must be a mapping this process owns and nothing may hold
/// a reference into it that expects other contents or protection than `fd`'s
/// pages give it.
unsafe fn map_shared(
    fd: BorrowedFd<'_>,
    at: Option<NonNull<u8>>,
    bytes: usize,
    offset: usize,
    prot: ProtFlags,
) -> io::Result<NonNull<u8>> {
    let len = NonZeroUsize::new(bytes).ok_or(io::ErrorKind::InvalidInput)?;
    let offset = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut flags = MapFlags::MAP_SHARED;
    if at.is_some() {
        flags |= MapFlags::MAP_FIXED;
    }
    let addr = at.and_then(|p| NonZeroUsize::new(p.as_ptr() as usize));
    // SAFETY: the caller's contract; a fresh mapping (no `at`) aliases nothing.
    let ptr = unsafe { mmap(addr, len, prot, flags, fd, offset) }?;
    Ok(ptr.cast())
}

/// Seal the mappings of `[base, base + bytes)` (mseal, Linux 6.10): from now on
/// they cannot be unmapped, moved, grown (an mremap of the writable slot would
/// map the next slot's page writable) or given another protection. Older kernels
/// lack it (ENOSYS); the read-only mapping still holds there, short of mremap.
fn seal(base: NonNull<u8>, bytes: usize) -> io::Result<()> {
    // SAFETY: mseal only changes what later calls on this range may do; it reads
    // and writes no memory. The range is this board's own mappings.
    let r = unsafe { libc::syscall(libc::SYS_mseal, base.as_ptr(), bytes, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Scoreboard {
    /// Map `len` zeroed slots in a new memfd, shared with every process forked
    /// afterwards (and a header page after them, see [`Header`]).
    pub fn new(len: usize) -> io::Result<Scoreboard> {
        let len = len.max(1);
        let stride = page_size();
        let bytes = board_bytes(len, stride);
        let fd = memfd_create(
            c"ferricorn-scoreboard",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let rw = File::from(fd);
        rw.set_len(bytes as u64)?;
        // Its size never changes: a shrink would make the master's reads fault.
        fcntl(
            &rw,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        Scoreboard::map(rw, len, stride)
    }

    /// Map the board a previous binary left open at `fd` across its exec (USR2),
    /// if it has the size this binary expects for `len` slots.
    pub fn inherit(fd: RawFd, len: usize) -> io::Result<Scoreboard> {
        let len = len.max(1);
        let stride = page_size();
        let bytes = board_bytes(len, stride);
        // SAFETY: `fstat` only reads the descriptor table; an invalid fd is an error.
        let stat = nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(fd) })?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("inherited scoreboard fd {fd} is not a file"),
            ));
        }
        // SAFETY: the fd is an open file (fstat above), so not one of the sockets,
        // and was handed to this process to own (the variable naming it is
        // removed); nothing else here refers to it. Owned, it is closed on any
        // error below, so no worker inherits a writable board.
        let rw = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        fcntl(&rw, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        if stat.st_size as u64 != bytes as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "inherited scoreboard has {} bytes, not {bytes}",
                    stat.st_size
                ),
            ));
        }
        Scoreboard::map(rw, len, stride)
    }

    fn map(rw: File, len: usize, stride: usize) -> io::Result<Scoreboard> {
        // O_RDONLY, through /proc: a second open file description of the same
        // memory that can never grant write access.
        let ro = File::open(format!("/proc/self/fd/{}", rw.as_raw_fd()))?;
        let bytes = board_bytes(len, stride);
        // SAFETY: a new mapping (no fixed address) aliases nothing; the file's
        // bytes are zero or slots a worker wrote, any bit pattern being valid for
        // the atomics in `Slot` and `Header`; page alignment exceeds `Slot`'s.
        let base = unsafe {
            map_shared(
                rw.as_fd(),
                None,
                bytes,
                0,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            )
        }?;
        Ok(Scoreboard {
            base,
            len,
            stride,
            fds: Some(BoardFds { rw, ro }),
        })
    }

    /// The memfd, to keep open across an exec (None in a worker).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fds.as_ref().map(|f| f.rw.as_fd())
    }

    /// Worker, right after the fork and before anything else runs: map the whole
    /// board read-only in place of the master's read-write mapping, then only
    /// `own`'s page read-write over it, seal both, and close the master's fds.
    /// From then on this process can write its own slot and nothing else of the
    /// board, whatever the app does.
    pub fn restrict_to(&mut self, own: usize) -> io::Result<()> {
        if own >= self.len {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let fds = self.fds.take().ok_or(io::ErrorKind::InvalidInput)?;
        let bytes = board_bytes(self.len, self.stride);
        // SAFETY: both replace ranges of this board's own mapping with the same
        // file's pages at the same offsets, so every `&Slot` still sees the same
        // memory; the process is single-threaded here (just forked), so nothing
        // writes the slots in between.
        unsafe {
            map_shared(
                fds.ro.as_fd(),
                Some(self.base),
                bytes,
                0,
                ProtFlags::PROT_READ,
            )?;
            map_shared(
                fds.rw.as_fd(),
                Some(self.slot_ptr(own)),
                self.stride,
                own * self.stride,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            )?;
        }
        match seal(self.base, bytes) {
            Err(e) if e.raw_os_error() != Some(libc::ENOSYS) => return Err(e),
            _ => {}
        }
        drop(fds);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot_ptr(&self, index: usize) -> NonNull<u8> {
        // SAFETY: callers pass index <= len; the mapping is (len + 1) pages.
        unsafe { self.base.add(index * self.stride) }
    }

    /// The slot at `index`, if it exists.
    pub fn slot(&self, index: usize) -> Option<&Slot> {
        if index >= self.len {
            return None;
        }
        // SAFETY: in bounds of the mapping (a page per slot, page-aligned), which
        // lives as long as `self`; Slot has only atomics, so shared references from
        // several processes are sound.
        Some(unsafe { self.slot_ptr(index).cast::<Slot>().as_ref() })
    }

    fn header(&self) -> &Header {
        // SAFETY: the page after the last slot, mapped with the slots; only atomics.
        unsafe { self.slot_ptr(self.len).cast::<Header>().as_ref() }
    }

    /// Slots that may belong to a worker: those below the highest ever assigned.
    fn span(&self) -> usize {
        usize::try_from(self.header().span.load(Ordering::Relaxed))
            .unwrap_or(0)
            .min(self.len)
    }

    /// Master, before forking the worker that gets slot `index`: clear what its
    /// last owner left. Returns the time of the assignment, which bounds the
    /// times read from the slot later (see [`Slot::in_request`]).
    pub fn assign(&self, index: usize) -> u64 {
        let now = now_ms();
        if let Some(s) = self.slot(index) {
            s.clear(now);
            let span = (index as u64 + 1).max(self.header().span.load(Ordering::Relaxed));
            self.header().span.store(span, Ordering::Relaxed);
        }
        now
    }

    /// Master: a stop's drain delay begins (or ends).
    pub fn set_draining(&self, on: bool) {
        self.header()
            .draining
            .store(u64::from(on), Ordering::Relaxed);
    }

    /// Worker: whether responses close their connection for a drain delay.
    pub fn draining(&self) -> bool {
        self.header().draining.load(Ordering::Relaxed) == 1
    }

    /// Master: the worker in slot `index` is gone; it no longer counts as a peer.
    pub fn release(&self, index: usize) {
        if let Some(s) = self.slot(index) {
            s.accepting.store(0, Ordering::Relaxed);
            s.conns.store(0, Ordering::Relaxed);
            s.busy_since_ms.store(0, Ordering::Relaxed);
            s.in_app.store(0, Ordering::Relaxed);
        }
    }

    /// Worker `me` holds more than one connection above the average of the
    /// workers that accept (leaving out any stuck in the app): it should leave the
    /// next connection to a peer. This is what spreads a burst of keep-alive
    /// connections evenly, where a shared listening socket lets whichever worker
    /// wakes first take them all.
    pub fn over_fair_share(&self, me: usize) -> bool {
        let Some(mine) = self.slot(me).map(Slot::conns) else {
            return false;
        };
        let now = now_ms();
        let (mut total, mut peers) = (0u64, 0u64);
        for i in 0..self.span() {
            let Some(s) = self.slot(i) else { break };
            let stuck = s.in_request_for(now).is_some_and(|ms| ms > STUCK_MS);
            if i == me || (s.accepting.load(Ordering::Relaxed) == 1 && !stuck) {
                total = total.saturating_add(s.conns());
                peers += 1;
            }
        }
        over_share(mine, total, peers)
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        // SAFETY: unmapping the region this value mapped; no `&Slot` outlives
        // `self`. (In a worker the seal refuses it; the exit unmaps.)
        let _ = unsafe { munmap(self.base.cast(), board_bytes(self.len, self.stride)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lifecycle() {
        let board = Scoreboard::new(4).unwrap();
        let assigned = board.assign(2);
        let slot = board.slot(2).unwrap();
        assert!(slot.in_request(now_ms(), assigned).is_none());
        slot.enter_request(
            b"GET",
            b"/a/very/long/path/that/goes/on/and/on/and/on/past/sixty/four/bytes",
        );
        let (elapsed, line) = slot.in_request(now_ms() + 5, assigned).unwrap();
        assert!(elapsed >= 5);
        assert_eq!(line.len(), 64);
        assert!(line.starts_with("GET /a/very/long"));
        slot.leave_request();
        assert!(slot.in_request(now_ms(), assigned).is_none());
        assert_eq!(slot.requests(), 1);
        assert!(board.slot(4).is_none());
    }

    #[test]
    fn what_a_worker_writes_is_read_within_bounds() {
        let board = Scoreboard::new(2).unwrap();
        let assigned = board.assign(0);
        let slot = board.slot(0).unwrap();
        let now = assigned + 10_000;
        for (busy_since, expect) in [
            (1, 10_000),               // before the worker existed: its age, not the uptime
            (assigned + 4_000, 6_000), // honest
            (u64::MAX, 0),             // in the future: just now
        ] {
            slot.busy_since_ms.store(busy_since, Ordering::Relaxed);
            slot.beat_ms.store(busy_since, Ordering::Relaxed);
            assert_eq!(slot.in_request(now, assigned).unwrap().0, expect);
            assert_eq!(slot.silent_for(now, assigned), expect);
        }
        // A request line with a newline and control bytes cannot forge a log line.
        slot.enter_request(b"GET", b"/x\n[ERROR] forged\x1b[2J\xff");
        let (_, line) = slot.in_request(now_ms(), assigned).unwrap();
        assert_eq!(line, r"GET /x\n[ERROR] forged\x1b[2J\xff");
        // Counts a peer wrote cannot overflow the balancing arithmetic.
        assert!(!over_share(u64::MAX, u64::MAX, u64::MAX));
        assert!(over_share(u64::MAX, 3, 3));
    }

    #[test]
    fn counters_by_kind_and_bounded_reads() {
        let board = Scoreboard::new(2).unwrap();
        board.assign(1);
        let slot = board.slot(1).unwrap();
        slot.count_response(b"GET", 200, Duration::from_millis(1));
        slot.count_response(b"POST", 404, Duration::from_millis(30));
        slot.count_response(b"BREW", 999, Duration::from_secs(60)); // other, 5xx, +Inf
        slot.count_response(b"get", 302, Duration::from_micros(5_000)); // case matters: other
        let c = slot.counts();
        assert_eq!(c.responses[1][0], 1);
        assert_eq!(c.responses[3][2], 1);
        assert_eq!(c.responses[4][7], 1);
        assert_eq!(c.responses[2][7], 1);
        // 5 ms is in the 5 ms bucket (le is "less than or equal").
        assert_eq!(c.duration_buckets, [2, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(c.requests(), 4);
        assert_eq!(c.duration_sum_us, 1_000 + 30_000 + 60_000_000 + 5_000);
        slot.enter_app();
        assert_eq!(slot.in_app(), 1);
        slot.leave_app();
        slot.leave_app(); // a lie: wraps, read as the bound
        assert_eq!(slot.in_app(), MAX_IN_APP);
        // A worker writing nonsense: each read is bounded, sums saturate.
        slot.responses[0].store(u64::MAX, Ordering::Relaxed);
        let lied = slot.counts();
        assert_eq!(lied.responses[0][0], MAX_COUNT);
        let mut total = lied;
        for _ in 0..100_000 {
            total.add(&lied);
        }
        assert!(total.responses[0][0] >= MAX_COUNT);
        // The master keeps the most it saw: a counter lowered does not lower it.
        let mut kept = c;
        kept.raise_to(&Counts::default());
        assert_eq!(kept, c);
        // A reassigned slot starts from zero (its counts were folded before).
        board.assign(1);
        assert_eq!(slot.counts(), Counts::default());
        assert_eq!(slot.in_app(), 0);
    }

    #[test]
    fn each_slot_has_its_own_page() {
        let board = Scoreboard::new(3).unwrap();
        let a = board.slot(0).unwrap() as *const Slot as usize;
        let b = board.slot(1).unwrap() as *const Slot as usize;
        assert_eq!(b - a, page_size());
        assert_eq!(a % page_size(), 0);
    }

    #[test]
    fn fair_share_counts_accepting_peers_only() {
        let board = Scoreboard::new(8).unwrap();
        board.assign(0);
        board.assign(1);
        let (a, b) = (board.slot(0).unwrap(), board.slot(1).unwrap());
        a.set_accepting(true);
        b.set_accepting(true);
        a.add_conns(4);
        b.add_conns(1);
        // 4 > (4 + 1) / 2 + 1: leave the next one to b.
        assert!(board.over_fair_share(0));
        assert!(!board.over_fair_share(1));
        a.add_conns(-1);
        assert!(!board.over_fair_share(0));
        a.add_conns(5);
        // A peer that stopped accepting, or is gone, takes nothing.
        b.set_accepting(false);
        assert!(!board.over_fair_share(0));
        b.set_accepting(true);
        assert!(board.over_fair_share(0));
        board.release(1);
        assert!(!board.over_fair_share(0));
    }
}
