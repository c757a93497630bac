//! The workers the master knows about, and what each has reported.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::time::Instant;

use ferricorn_signals::scoreboard::now_ms;
use ferricorn_signals::Report;
use nix::unistd::Pid;

use crate::upgrade::AdoptedWorker;

#[derive(Debug)]
pub struct WorkerSlot {
    pub pid: Pid,
    /// 1, 2, 3… in spawn order; shown in logs.
    pub id: u32,
    /// Reload starts a new generation; older ones are retired once it is ready.
    pub generation: u32,
    pub ready: bool,
    /// A stop (SIGTERM) was sent to this worker.
    pub retiring: bool,
    /// Its index in the scoreboard (usize::MAX: none).
    pub slot: usize,
    /// Monotonic ms (the scoreboard's clock) when its slot was assigned, just
    /// before the fork: the master's own record, which bounds what the worker
    /// writes in its slot.
    pub assigned_ms: u64,
    /// When the master sent SIGABRT (timeout), and why; SIGKILL follows after a grace.
    pub aborted: Option<(Instant, String)>,
    /// The master sent SIGKILL (and why), so the log never guesses who killed it.
    pub killed_for: Option<String>,
    /// It served its --max-requests and waits for a replacement.
    pub wants_recycle: bool,
    /// The last failure the worker reported before exiting.
    pub failure: Option<(u8, String)>,
    /// None for a worker adopted from the previous binary after an upgrade.
    status: Option<std::fs::File>,
    pending: Vec<u8>,
}

impl WorkerSlot {
    pub fn new(
        pid: Pid,
        id: u32,
        generation: u32,
        (slot, assigned_ms): (usize, u64),
        status: OwnedFd,
    ) -> WorkerSlot {
        WorkerSlot {
            pid,
            id,
            generation,
            ready: false,
            retiring: false,
            slot,
            assigned_ms,
            aborted: None,
            killed_for: None,
            wants_recycle: false,
            failure: None,
            status: Some(std::fs::File::from(status)),
            pending: Vec::new(),
        }
    }

    /// A worker the previous binary started (after an upgrade): in generation 0,
    /// with no status pipe in this process; its slot in the inherited scoreboard,
    /// if there is one (`slot` is then checked to be in range and unused).
    pub fn adopted(w: &AdoptedWorker, id: u32, slot: Option<usize>) -> WorkerSlot {
        WorkerSlot {
            pid: w.pid,
            id,
            generation: 0,
            ready: w.ready,
            retiring: w.retiring,
            slot: slot.unwrap_or(usize::MAX),
            assigned_ms: w.assigned_ms.unwrap_or_else(now_ms),
            aborted: None,
            killed_for: None,
            wants_recycle: false,
            failure: None,
            status: None,
            pending: Vec::new(),
        }
    }

    pub fn status_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.status.as_ref().map(std::os::fd::AsFd::as_fd)
    }

    /// Read what the worker wrote on its status pipe (non-blocking) and return the
    /// complete reports.
    pub fn read_reports(&mut self) -> Vec<Report> {
        let mut buf = [0u8; 4096];
        let Some(status) = self.status.as_mut() else {
            return Vec::new();
        };
        loop {
            match status.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if let Some(r) = Report::decode(String::from_utf8_lossy(&line[..end]).as_ref()) {
                out.push(r);
            }
        }
        out
    }
}

#[derive(Debug, Default)]
pub struct WorkerTable {
    slots: Vec<WorkerSlot>,
}

impl WorkerTable {
    pub fn insert(&mut self, slot: WorkerSlot) {
        self.slots.push(slot);
    }

    pub fn remove(&mut self, pid: Pid) -> Option<WorkerSlot> {
        let i = self.slots.iter().position(|s| s.pid == pid)?;
        Some(self.slots.remove(i))
    }

    pub fn get_mut(&mut self, pid: Pid) -> Option<&mut WorkerSlot> {
        self.slots.iter_mut().find(|s| s.pid == pid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &WorkerSlot> {
        self.slots.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut WorkerSlot> {
        self.slots.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Close every status pipe without touching the workers (in a forked child).
    pub fn forget_all(&mut self) {
        self.slots.clear();
    }
}
