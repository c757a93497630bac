//! The master loop, in unicorn's shape: handlers only record signals and wake the
//! loop; the loop drains the signals, reaps children, acts, and sleeps until its
//! next deadline.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ferricorn_config::Config;
use ferricorn_signals::{
    exit_code, sys, Action, Delivered, Exit, Report, SelfPipe, Signal, StopMode,
};
use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::fcntl::OFlag;
use nix::sys::signal::kill;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{self, ForkResult, Pid};

use crate::listeners::{stop_listening, Listener};
use crate::sys::fork_single_threaded;
use crate::worker_table::{WorkerSlot, WorkerTable};

/// What a freshly forked worker is handed.
pub struct ChildStart {
    /// The shared listening sockets (the child's copies of the master's).
    pub listeners: Vec<TcpListener>,
    /// Write end of this worker's status pipe (see [`Report`]).
    pub status: OwnedFd,
    pub worker_id: u32,
    pub master_pid: Pid,
}

/// The worker side of a fork: runs the worker and returns its exit code.
pub type SpawnFn<'a> = dyn FnMut(ChildStart) -> u8 + 'a;

const SIGNAL_TOKEN: Token = Token(0);
/// After a quick stop's signal, how long workers get before SIGKILL.
const QUICK_GRACE: Duration = Duration::from_secs(1);
/// After SIGKILL, how long to wait for the kernel to hand the children back.
const KILL_REAP_GRACE: Duration = Duration::from_secs(5);
const MAX_BOOT_BACKOFF: Duration = Duration::from_secs(10);

/// Run the master until it stops; returns how the process must exit.
/// `listeners` are already bound. In a forked child, `spawn` runs the worker and
/// the child exits with its return value, never returning here.
pub fn run(config: &Config, listeners: Vec<Listener>, spawn: &mut SpawnFn<'_>) -> Exit {
    match Master::new(config, listeners) {
        Ok(mut master) => master.run(spawn),
        Err(e) => {
            error!("master failed to start: {e}");
            Exit::Code(exit_code::MASTER_FAILED)
        }
    }
}

struct Stop {
    mode: StopMode,
    exit: Exit,
    reason: String,
    began: Instant,
    deadline: Instant,
    workers_at_start: usize,
    killed: usize,
    kill_sent: bool,
}

enum State {
    Running,
    Stopping(Stop),
}

struct Master<'c> {
    config: &'c Config,
    pid: Pid,
    listeners: Vec<Listener>,
    signals: Option<SelfPipe>,
    poll: Option<Poll>,
    workers: WorkerTable,
    state: State,
    target: u32,
    generation: u32,
    next_worker_id: u32,
    boot_failures: u32,
    next_spawn_at: Instant,
}

impl<'c> Master<'c> {
    fn new(config: &'c Config, listeners: Vec<Listener>) -> std::io::Result<Master<'c>> {
        let mut handled: Vec<Signal> = config.policy.signals().collect();
        handled.push(Signal::SIGCHLD);
        let signals = SelfPipe::install(&handled)?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&signals.read_fd()),
            SIGNAL_TOKEN,
            Interest::READABLE,
        )?;
        Ok(Master {
            config,
            pid: unistd::getpid(),
            listeners,
            signals: Some(signals),
            poll: Some(poll),
            workers: WorkerTable::default(),
            state: State::Running,
            target: config.workers,
            generation: 1,
            next_worker_id: 1,
            boot_failures: 0,
            next_spawn_at: Instant::now(),
        })
    }

    fn run(&mut self, spawn: &mut SpawnFn<'_>) -> Exit {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout = self.next_wakeup().saturating_duration_since(Instant::now());
            if let Some(poll) = self.poll.as_mut() {
                if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        error!("master poll failed: {e}");
                        return Exit::Code(exit_code::MASTER_FAILED);
                    }
                }
            }
            for event in events.iter() {
                if event.token() != SIGNAL_TOKEN {
                    self.read_reports(Pid::from_raw(event.token().0 as i32));
                }
            }
            let delivered = self
                .signals
                .as_ref()
                .map(SelfPipe::drain)
                .unwrap_or_default();
            for d in delivered {
                self.on_signal(d);
            }
            self.reap();
            if let Some(exit) = self.advance_stop() {
                return exit;
            }
            if matches!(self.state, State::Running) {
                self.retire_old_generation();
                self.maintain_worker_count(spawn);
            }
        }
    }

    fn next_wakeup(&self) -> Instant {
        let now = Instant::now();
        match &self.state {
            State::Stopping(stop) => stop.deadline,
            State::Running if self.current_workers() < self.target as usize => {
                self.next_spawn_at.max(now)
            }
            // Nothing scheduled: signals and worker reports wake the loop.
            State::Running => now + Duration::from_secs(60),
        }
    }

    fn on_signal(&mut self, d: Delivered) {
        if d.signal == Signal::SIGCHLD {
            return; // reap() runs on every turn of the loop
        }
        let from = d
            .sender
            .map(|p| format!(" from pid {p}"))
            .unwrap_or_default();
        let action = self.config.policy.action(d.signal);
        let name = d
            .signal
            .as_str()
            .trim_start_matches("SIG")
            .to_ascii_lowercase();
        match action {
            Action::GracefulStop | Action::QuickStop => {
                let mode = action.stop_mode().unwrap_or(StopMode::Quick);
                let exit = self
                    .config
                    .policy
                    .exit_for(d.signal, self.pid.as_raw() == 1);
                // tests/it/signals.rs waits for this line: listeners are closed when it is logged.
                self.begin_stop(
                    mode,
                    exit,
                    format!("{action} after SIG{}", name.to_ascii_uppercase()),
                    &format!("Handling signal: {name}{from}"),
                );
            }
            Action::Reload => {
                info!(
                    "Handling signal: {name}{from}: reloading (new generation of {} workers)",
                    self.target
                );
                if matches!(self.state, State::Running) {
                    self.generation += 1;
                    self.next_spawn_at = Instant::now();
                }
            }
            Action::AddWorker => {
                self.target = self.target.saturating_add(d.count);
                info!("Handling signal: {name}{from}: workers now {}", self.target);
            }
            Action::RemoveWorker => {
                self.target = self.target.saturating_sub(d.count).max(1);
                info!("Handling signal: {name}{from}: workers now {}", self.target);
            }
            Action::ReopenLogs => {
                info!("Handling signal: {name}{from}: no log files to reopen (logs go to stderr)")
            }
            Action::Upgrade => {
                warn!("Handling signal: {name}{from}: binary upgrade is not supported yet; ignored")
            }
            Action::Ignore => debug!("Handling signal: {name}{from}: ignored"),
        }
    }

    fn begin_stop(&mut self, mode: StopMode, exit: Exit, reason: String, log_line: &str) {
        let now = Instant::now();
        if let State::Stopping(stop) = &mut self.state {
            if mode > stop.mode {
                // A quick stop overrides a graceful one in progress: cut the rest now.
                info!("{log_line}: escalating to a quick stop");
                stop.mode = mode;
                stop.exit = exit;
                stop.reason = reason;
                stop.deadline = stop.deadline.min(now + QUICK_GRACE);
                self.signal_workers(Signal::SIGQUIT);
            } else {
                info!("{log_line}: already stopping; nothing changes");
            }
            return;
        }
        // Refuse new connections before anything else, for every process sharing the sockets.
        for l in self.listeners.drain(..) {
            stop_listening(&l);
        }
        let (signal, grace) = match mode {
            StopMode::Graceful => (Signal::SIGTERM, self.config.graceful_timeout),
            StopMode::Quick => (Signal::SIGQUIT, QUICK_GRACE),
        };
        info!(
            "{log_line}: {reason}, {} workers, up to {:.1}s",
            self.workers.len(),
            grace.as_secs_f64()
        );
        self.signal_workers(signal);
        self.state = State::Stopping(Stop {
            mode,
            exit,
            reason,
            began: now,
            deadline: now + grace,
            workers_at_start: self.workers.len(),
            killed: 0,
            kill_sent: false,
        });
    }

    fn signal_workers(&mut self, signal: Signal) {
        for w in self.workers.iter_mut() {
            w.retiring = true;
            let _ = kill(w.pid, signal);
        }
    }

    /// While stopping: SIGKILL what is left at the deadline; return the exit once no
    /// worker is left.
    fn advance_stop(&mut self) -> Option<Exit> {
        let State::Stopping(stop) = &mut self.state else {
            return None;
        };
        if self.workers.is_empty() {
            let elapsed = stop.began.elapsed().as_secs_f64();
            info!(
                "Shutting down: {}; {} of {} workers stopped in time, {} killed; {elapsed:.2}s; exiting with {}",
                stop.reason,
                stop.workers_at_start.saturating_sub(stop.killed),
                stop.workers_at_start,
                stop.killed,
                stop.exit
            );
            return Some(stop.exit);
        }
        let now = Instant::now();
        if now >= stop.deadline {
            if stop.kill_sent {
                error!(
                    "{} workers did not exit after SIGKILL; exiting anyway",
                    self.workers.len()
                );
                return Some(stop.exit);
            }
            warn!(
                "{} workers still running at the stop deadline; sending SIGKILL",
                self.workers.len()
            );
            stop.killed = self.workers.len();
            stop.kill_sent = true;
            stop.deadline = now + KILL_REAP_GRACE;
            for w in self.workers.iter() {
                let _ = kill(w.pid, Signal::SIGKILL);
            }
        }
        None
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.on_worker_exit(pid, WorkerEnd::Code(code))
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.on_worker_exit(pid, WorkerEnd::Signal(sig))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn on_worker_exit(&mut self, pid: Pid, end: WorkerEnd) {
        // Reports written just before exiting may not have been polled yet.
        self.read_reports(pid);
        let Some(slot) = self.workers.remove(pid) else {
            debug!("reaped unknown child {pid} ({end})");
            return;
        };
        if let Some(poll) = self.poll.as_ref() {
            let _ = poll
                .registry()
                .deregister(&mut SourceFd(&slot.status_fd().as_raw_fd()));
        }
        let who = format!("Worker {} (pid: {pid})", slot.id);
        let stopping = matches!(self.state, State::Stopping(_));
        if stopping || slot.retiring {
            info!("{who} exited ({end})");
            return;
        }
        // A worker that never became ready and says why (or exits 3/4) halts the
        // server: respawning it would only fail again.
        let code = match (&slot.failure, end) {
            (Some((c, _)), _) => Some(*c),
            (None, WorkerEnd::Code(c))
                if !slot.ready
                    && (c == i32::from(exit_code::WORKER_BOOT_FAILED)
                        || c == i32::from(exit_code::APP_LOAD_FAILED)) =>
            {
                Some(c as u8)
            }
            _ => None,
        };
        if let Some(code) = code.filter(|_| !slot.ready) {
            let message = slot.failure.map(|(_, m)| m).unwrap_or_else(|| match code {
                exit_code::APP_LOAD_FAILED => "App failed to load".to_string(),
                _ => "Worker failed to boot".to_string(),
            });
            if self.abandon_reload(slot.generation, &message) {
                return;
            }
            error!("{message}");
            let reason = if code == exit_code::APP_LOAD_FAILED {
                "App failed to load"
            } else {
                "Worker failed to boot"
            };
            self.begin_stop(
                StopMode::Quick,
                Exit::Code(code),
                reason.to_string(),
                &format!("{who} exited with code {code}"),
            );
            return;
        }
        if slot.ready {
            warn!("{who} {end}; starting a new one");
        } else {
            self.boot_failures += 1;
            let backoff = boot_backoff(self.boot_failures);
            self.next_spawn_at = Instant::now() + backoff;
            warn!(
                "{who} {end} before it was ready; starting a new one in {:.1}s",
                backoff.as_secs_f64()
            );
        }
    }

    /// A new generation (from a reload) that cannot boot while the previous one is
    /// serving: keep serving with the previous one instead of halting.
    fn abandon_reload(&mut self, failed_generation: u32, message: &str) -> bool {
        let previous = self
            .workers
            .iter()
            .filter(|w| w.generation < failed_generation && w.ready && !w.retiring)
            .map(|w| w.generation)
            .max();
        let Some(previous) = previous else {
            return false;
        };
        error!("{message}");
        error!(
            "Reload failed: keeping the {} workers of the previous generation",
            self.workers
                .iter()
                .filter(|w| w.generation == previous)
                .count()
        );
        for w in self
            .workers
            .iter_mut()
            .filter(|w| w.generation >= failed_generation && !w.retiring)
        {
            w.retiring = true;
            let _ = kill(w.pid, Signal::SIGTERM);
        }
        self.generation = previous;
        true
    }

    fn read_reports(&mut self, pid: Pid) {
        let Some(slot) = self.workers.get_mut(pid) else {
            return;
        };
        for report in slot.read_reports() {
            match report {
                Report::Ready => {
                    slot.ready = true;
                    self.boot_failures = 0;
                    // tests/it wait for this line before sending requests.
                    info!("Worker {} (pid: {pid}) ready", slot.id);
                }
                Report::Failed { code, message } => slot.failure = Some((code, message)),
            }
        }
    }

    fn current_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.generation == self.generation && !w.retiring)
            .count()
    }

    /// After a reload: once the new generation is complete and ready, stop the old one.
    fn retire_old_generation(&mut self) {
        let gen = self.generation;
        let ready = self
            .workers
            .iter()
            .filter(|w| w.generation == gen && w.ready && !w.retiring)
            .count();
        if ready < self.target as usize {
            return;
        }
        for w in self
            .workers
            .iter_mut()
            .filter(|w| w.generation < gen && !w.retiring)
        {
            info!(
                "Retiring worker {} (pid: {}) of the previous generation",
                w.id, w.pid
            );
            w.retiring = true;
            let _ = kill(w.pid, Signal::SIGTERM);
        }
    }

    fn maintain_worker_count(&mut self, spawn: &mut SpawnFn<'_>) {
        let current = self.current_workers();
        let target = self.target as usize;
        if current > target {
            let gen = self.generation;
            let mut extra = current - target;
            // Oldest first: slots are kept in spawn order.
            for w in self
                .workers
                .iter_mut()
                .filter(|w| w.generation == gen && !w.retiring)
            {
                if extra == 0 {
                    break;
                }
                info!(
                    "Stopping worker {} (pid: {}): workers now {target}",
                    w.id, w.pid
                );
                w.retiring = true;
                let _ = kill(w.pid, Signal::SIGTERM);
                extra -= 1;
            }
            return;
        }
        if Instant::now() < self.next_spawn_at {
            return;
        }
        // While workers are failing to boot, start them one at a time.
        let missing = if self.boot_failures > 0 {
            1.min(target - current)
        } else {
            target - current
        };
        for _ in 0..missing {
            if let Err(e) = self.spawn_worker(spawn) {
                error!("cannot start a worker: {e}");
                self.next_spawn_at = Instant::now() + Duration::from_secs(1);
                return;
            }
        }
    }

    fn spawn_worker(&mut self, spawn: &mut SpawnFn<'_>) -> nix::Result<()> {
        let (status_read, status_write) = unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let id = self.next_worker_id;
        let old_mask = sys::block_all().map_err(|_| nix::Error::last())?;
        let forked = fork_single_threaded();
        match forked {
            Ok(ForkResult::Child) => {
                drop(status_read);
                let code = self.become_worker(spawn, status_write, id);
                std::process::exit(i32::from(code));
            }
            Ok(ForkResult::Parent { child }) => {
                let _ = sys::set_mask(&old_mask);
                drop(status_write);
                self.next_worker_id += 1;
                let slot = WorkerSlot::new(child, id, self.generation, status_read);
                if let Some(poll) = self.poll.as_ref() {
                    let _ = poll.registry().register(
                        &mut SourceFd(&slot.status_fd().as_raw_fd()),
                        Token(child.as_raw() as usize),
                        Interest::READABLE,
                    );
                }
                self.workers.insert(slot);
                // gunicorn prints the same line; log parsers look for it.
                info!("Booting worker with pid: {child}");
                Ok(())
            }
            Err(e) => {
                let _ = sys::set_mask(&old_mask);
                Err(e)
            }
        }
    }

    /// In the child, before anything else: put back the signal dispositions the
    /// master installed and close the master's fds, then hand over to the worker.
    /// The signal mask stays fully blocked until the worker has installed its own
    /// handlers, so no signal meets a default action in between.
    fn become_worker(&mut self, spawn: &mut SpawnFn<'_>, status: OwnedFd, worker_id: u32) -> u8 {
        if let Some(signals) = self.signals.take() {
            signals.reset_in_child();
        }
        self.poll = None;
        self.workers.forget_all();
        let listeners = self.listeners.drain(..).map(|l| l.socket).collect();
        spawn(ChildStart {
            listeners,
            status,
            worker_id,
            master_pid: self.pid,
        })
    }
}

fn boot_backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    Duration::from_millis(ms).min(MAX_BOOT_BACKOFF)
}

#[derive(Debug, Clone, Copy)]
enum WorkerEnd {
    Code(i32),
    Signal(Signal),
}

impl std::fmt::Display for WorkerEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerEnd::Code(c) => write!(f, "exited with code {c}"),
            WorkerEnd::Signal(s) => write!(f, "was killed by {}", s.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(boot_backoff(1), Duration::from_millis(100));
        assert_eq!(boot_backoff(2), Duration::from_millis(200));
        assert_eq!(boot_backoff(4), Duration::from_millis(800));
        assert_eq!(boot_backoff(30), MAX_BOOT_BACKOFF);
    }
}
