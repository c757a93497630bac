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
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::time::{clock_gettime, ClockId};

/// A worker in the app longer than this no longer counts as a peer that will
/// take the next connection soon (see [`Scoreboard::over_fair_share`]).
const STUCK_MS: u64 = 20;

/// Bytes of "METHOD target" kept for the timeout log line.
const LINE_WORDS: usize = 8;

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
