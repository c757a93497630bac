//! The scoreboard: one cache line per worker in memory shared by the master and
//! its workers (an anonymous `MAP_SHARED` mapping made before the first fork).
//!
//! A worker writes a few atomics per request — no syscall, unlike gunicorn's
//! per-request `utime` of a temp file — and the master reads them to find a worker
//! stuck in a request or in its loop, and to say how many requests were in flight
//! when a stop began.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// A worker in the app longer than this no longer counts as a peer that will
/// take the next connection soon (see [`Scoreboard::over_fair_share`]).
const STUCK_MS: u64 = 20;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::time::{clock_gettime, ClockId};

/// Bytes of "METHOD target" kept for the timeout log line.
const LINE_WORDS: usize = 8;

/// One worker's entry. All fields are atomics, so any bit pattern (including the
/// zeroes a fresh mapping holds) is valid, and both processes may touch them.
#[repr(C, align(128))]
pub struct Slot {
    pid: AtomicI32,
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

    /// Master: (ms in the current request, "METHOD target") if the worker is in the app.
    pub fn in_request(&self, now: u64) -> Option<(u64, String)> {
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
            now.saturating_sub(since),
            String::from_utf8_lossy(&bytes[..end]).into_owned(),
        ))
    }

    /// ms in the current request, if the worker is in the app.
    fn in_request_for(&self, now: u64) -> Option<u64> {
        let since = self.busy_since_ms.load(Ordering::Relaxed);
        (since != 0).then(|| now.saturating_sub(since))
    }

    /// Master: ms since the worker last showed life (its loop turned or it entered a request).
    pub fn silent_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.beat_ms.load(Ordering::Relaxed))
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

    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }
}

/// Whether `mine` of `total` connections, over `peers` takers (this one
/// included), is more than one above the average: then this taker should
/// leave the next connection to the others.
pub fn over_share(mine: u64, total: u64, peers: u64) -> bool {
    peers >= 2 && mine * peers > total + peers
}

/// The shared table of slots.
pub struct Scoreboard {
    base: NonNull<Slot>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through `&Slot`, whose fields are
// all atomics (built for sharing, across threads as across processes); the
// pointer itself is never written after `new`.
unsafe impl Send for Scoreboard {}
// SAFETY: as for Send: every access is an atomic operation.
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// Map `len` zeroed slots shared with every process forked afterwards (and one
    /// more at the end whose `pid` holds how many slots were ever assigned).
    pub fn new(len: usize) -> io::Result<Scoreboard> {
        let bytes = NonZeroUsize::new((len.max(1) + 1) * std::mem::size_of::<Slot>())
            .ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh anonymous mapping aliases nothing; it is zero-filled, and
        // zero is a valid value for every atomic in `Slot`; page alignment exceeds
        // `Slot`'s alignment.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        Ok(Scoreboard {
            base: ptr.cast(),
            len: len.max(1),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot at `index`, if it exists.
    pub fn slot(&self, index: usize) -> Option<&Slot> {
        if index >= self.len {
            return None;
        }
        // SAFETY: in bounds of the mapping, which lives as long as `self`; Slot has
        // only atomics, so shared references from several processes are sound.
        Some(unsafe { &*self.base.as_ptr().add(index) })
    }

    /// The trailing slot: `pid` holds the number of slots ever assigned.
    fn header(&self) -> &Slot {
        // SAFETY: `new` mapped `len + 1` slots; the last one is the header.
        unsafe { &*self.base.as_ptr().add(self.len) }
    }

    /// Slots that may belong to a worker: those below the highest ever assigned.
    fn span(&self) -> usize {
        usize::try_from(self.header().pid.load(Ordering::Relaxed))
            .unwrap_or(0)
            .min(self.len)
    }

    /// Master: give slot `index` to a new worker, clearing what its last owner left.
    pub fn assign(&self, index: usize, pid: i32) {
        if let Some(s) = self.slot(index) {
            s.busy_since_ms.store(0, Ordering::Relaxed);
            s.requests.store(0, Ordering::Relaxed);
            s.conns.store(0, Ordering::Relaxed);
            s.accepting.store(0, Ordering::Relaxed);
            s.beat_ms.store(now_ms(), Ordering::Relaxed);
            s.pid.store(pid, Ordering::Relaxed);
            let span = i32::try_from(index + 1).unwrap_or(i32::MAX);
            self.header().pid.fetch_max(span, Ordering::Relaxed);
        }
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
                total += s.conns();
                peers += 1;
            }
        }
        over_share(mine, total, peers)
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        // SAFETY: unmapping the region this value mapped; no `&Slot` outlives `self`.
        let _ = unsafe {
            munmap(
                self.base.cast(),
                (self.len + 1) * std::mem::size_of::<Slot>(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lifecycle() {
        let board = Scoreboard::new(4).unwrap();
        board.assign(2, 42);
        let slot = board.slot(2).unwrap();
        assert_eq!(slot.pid(), 42);
        assert!(slot.in_request(now_ms()).is_none());
        slot.enter_request(
            b"GET",
            b"/a/very/long/path/that/goes/on/and/on/and/on/past/sixty/four/bytes",
        );
        let (elapsed, line) = slot.in_request(now_ms() + 5).unwrap();
        assert!(elapsed >= 5);
        assert_eq!(line.len(), 64);
        assert!(line.starts_with("GET /a/very/long"));
        slot.leave_request();
        assert!(slot.in_request(now_ms()).is_none());
        assert_eq!(slot.requests(), 1);
        assert!(board.slot(4).is_none());
    }

    #[test]
    fn fair_share_counts_accepting_peers_only() {
        let board = Scoreboard::new(8).unwrap();
        board.assign(0, 10);
        board.assign(1, 11);
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
