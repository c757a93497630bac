//! The master loop, in unicorn's shape: handlers only record signals and wake the
//! loop; the loop drains the signals, reaps children, acts, and sleeps until its
//! next deadline.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ferricorn_config::Config;
use ferricorn_signals::scoreboard::{now_ms, Scoreboard};
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

use crate::listeners::{answer_unserved, apply_options, close_drained, stop_admitting, Listener};
use crate::metrics::{self, ExitCause, Metrics};
use crate::notify::Notifier;
use crate::sys::fork_single_threaded;
use crate::upgrade::{self, Adopted, AdoptedWorker, StartInfo};
use crate::worker_table::{WorkerSlot, WorkerTable};

/// What a freshly forked worker is handed.
pub struct ChildStart {
    /// The shared listening sockets (the child's copies of the master's).
    pub listeners: Vec<ferricorn_signals::Listening>,
    /// Write end of this worker's status pipe (see [`Report`]).
    pub status: OwnedFd,
    pub worker_id: u32,
    pub master_pid: Pid,
    /// The shared scoreboard and this worker's slot in it.
    pub scoreboard: Scoreboard,
    pub slot: usize,
}

/// The worker side of a fork: runs the worker and returns its exit code.
pub type SpawnFn<'a> = dyn FnMut(&Config, ChildStart) -> u8 + 'a;

/// Work around each fork that the process's runtime needs: CPython's fork protocol,
/// since the master runs inside the interpreter its workers are forks of.
pub trait ForkHooks {
    /// In the parent, just before `fork`.
    fn before(&mut self);
    /// In the parent, just after.
    fn after_parent(&mut self);
    /// In the child, just after, before anything else of the worker runs.
    fn after_child(&mut self);
}

/// The master's moments that gunicorn's `child_exit`, `nworkers_changed` and `pre_exec` hooks
/// are for, told after the fact from the master's loop.
pub trait MasterEvents {
    /// A worker was reaped (whatever ended it).
    fn worker_exited(&mut self, pid: i32, worker_id: u32);
    /// The number of workers asked for changed (TTIN, TTOU, a reload).
    fn workers_changed(&mut self, new: u32, old: u32);
    /// The master is about to re-execute itself (USR2).
    fn upgrading(&mut self);
}

/// What the binary hooks into the master, each optional.
#[derive(Default)]
pub struct Hooks {
    pub fork: Option<Box<dyn ForkHooks>>,
    pub events: Option<Box<dyn MasterEvents>>,
    /// systemd's notify socket, if it gave one (see [`Notifier`]).
    pub notify: Notifier,
}

/// Read the configuration again (HUP): the same command line, environment and
/// config file as at start. It is given the configuration in force; an error keeps
/// it.
pub type ReloadFn<'a> = dyn FnMut(&Config) -> Result<Config, String> + 'a;

const SIGNAL_TOKEN: Token = Token(0);
/// After a quick stop's signal, how long workers get before SIGKILL.
const QUICK_GRACE: Duration = Duration::from_secs(1);
/// After SIGKILL, how long to wait for the kernel to hand the children back.
const KILL_REAP_GRACE: Duration = Duration::from_secs(5);
const MAX_BOOT_BACKOFF: Duration = Duration::from_secs(10);
/// After SIGABRT (timeout), time for the worker to write its Python traceback.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// After a stop stops admitting connections, how long before the master looks
/// for an empty queue to shut the sockets down: handshakes already under way when
/// it began complete within a round trip, and must find the socket still open.
const SETTLE: Duration = Duration::from_millis(200);
/// How often an undrained queue is looked at again.
const DRAIN_CHECK: Duration = Duration::from_millis(10);
/// How often timeouts are checked when `--timeout` is on.
const TIMEOUT_CHECK: Duration = Duration::from_millis(250);
/// Scoreboard slots: the most workers one master runs at once.
const MAX_WORKERS: usize = 1024;

/// Run the master until it stops; returns how the process must exit.
/// `listeners` are already bound. In a forked child, `spawn` runs the worker and
/// the child exits with its return value, never returning here.
/// `adopted` are workers a previous binary left running (after an upgrade); `start`
/// says how to re-execute for the next upgrade (None: upgrades are refused).
#[allow(clippy::too_many_arguments)] // each is one piece start-up prepared
pub fn run(
    config: Config,
    signals: SelfPipe,
    listeners: Vec<Listener>,
    adopted: Adopted,
    start: Option<StartInfo>,
    reload: &mut ReloadFn<'_>,
    spawn: &mut SpawnFn<'_>,
    hooks: Hooks,
) -> Exit {
    let Hooks {
        fork,
        events,
        mut notify,
    } = hooks;
    match Master::new(config, signals, listeners, adopted, start) {
        Ok(master) => Master {
            fork_hooks: fork,
            events,
            notify,
            ..master
        }
        .run(reload, spawn),
        Err(e) => {
            let message = format!("master failed to start: {e}");
            error!("{message}");
            notify.failed(&format!("Failed to start: {message}"), e.raw_os_error());
            Exit::Code(exit_code::MASTER_FAILED)
        }
    }
}

/// Install the master's handlers for the signals `policy` acts on, then let
/// signals in. Called as soon as the policy is known: the `ferricorn` command
/// blocks them as its first act, and an upgrade's exec keeps them blocked, so
/// one sent during start-up (config, binding, preload) waits in the pipe for
/// the loop, never meeting its default action.
pub fn hold_signals(policy: &ferricorn_signals::Policy) -> std::io::Result<SelfPipe> {
    let mut handled: Vec<Signal> = policy.signals().collect();
    handled.push(Signal::SIGCHLD);
    let signals = SelfPipe::install(&handled)?;
    sys::set_mask(&nix::sys::signal::SigSet::empty())?;
    Ok(signals)
}

struct Stop {
    mode: StopMode,
    exit: Exit,
    reason: String,
    began: Instant,
    deadline: Instant,
    workers_at_start: usize,
    /// Workers inside a request when the stop began.
    busy_at_start: Vec<Pid>,
    killed: Vec<Pid>,
    kill_sent: bool,
    /// When the sockets may be shut down, once their queues are empty.
    settle_at: Instant,
}

enum State {
    Running,
    /// A graceful stop was asked for and waits out `--drain-delay`: everything
    /// is served as before, but each response closes its connection.
    Delaying(Delayed),
    Stopping(Stop),
}

/// A graceful stop held for `--drain-delay`.
struct Delayed {
    exit: Exit,
    reason: String,
    log_line: String,
    until: Instant,
}

/// A max-requests recycle in progress: `old` keeps serving until `replacement` is ready.
struct Recycle {
    old: Pid,
    replacement: Option<Pid>,
}

struct Master {
    config: Config,
    pid: Pid,
    listeners: Vec<Listener>,
    signals: Option<SelfPipe>,
    poll: Option<Poll>,
    scoreboard: Option<Scoreboard>,
    workers: WorkerTable,
    state: State,
    target: u32,
    generation: u32,
    next_worker_id: u32,
    boot_failures: u32,
    /// Since when workers have been failing to boot with none ready.
    failing_since: Option<Instant>,
    next_spawn_at: Instant,
    recycle: Option<Recycle>,
    last_timeout_check: Instant,
    start: Option<StartInfo>,
    fork_hooks: Option<Box<dyn ForkHooks>>,
    events: Option<Box<dyn MasterEvents>>,
    notify: Notifier,
    /// When the last reload began, and how it failed if it did (for `STATUS=`).
    last_reload: Option<String>,
    /// Why the server stops on its own (workers that cannot boot), for `STATUS=`.
    failure: Option<String>,
    /// `--metrics-bind` (see metrics.rs).
    metrics: Option<Metrics>,
}

impl Master {
    fn new(
        config: Config,
        signals: SelfPipe,
        listeners: Vec<Listener>,
        adopted: Adopted,
        start: Option<StartInfo>,
    ) -> std::io::Result<Master> {
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&signals.read_fd()),
            SIGNAL_TOKEN,
            Interest::READABLE,
        )?;
        let metrics = match &config.metrics_bind {
            Some(bind) => Some(Metrics::bind(bind, poll.registry())?),
            None => None,
        };
        let now = Instant::now();
        let inherited = adopted
            .scoreboard_fd
            .map(|fd| Scoreboard::inherit(fd, MAX_WORKERS));
        let (scoreboard, slots_known) = match inherited {
            Some(Ok(board)) => (board, true),
            Some(Err(e)) => {
                warn!("cannot map the previous binary's scoreboard ({e}); --timeout covers its workers only once they are replaced");
                (Scoreboard::new(MAX_WORKERS)?, false)
            }
            None => (Scoreboard::new(MAX_WORKERS)?, false),
        };
        let mut workers = WorkerTable::default();
        for (i, w) in adopted.workers.iter().enumerate() {
            // Its slot in the board it writes, if that is the board mapped here;
            // each slot at most once (the exec'd master trusts nothing twice).
            let slot = w
                .slot
                .filter(|s| slots_known && *s < MAX_WORKERS)
                .filter(|s| workers.iter().all(|o| o.slot != *s));
            // Generation 0: retired once this binary's first generation is ready.
            workers.insert(WorkerSlot::adopted(w, i as u32 + 1, slot));
        }
        let serving = adopted.workers.iter().filter(|w| !w.retiring).count();
        if !adopted.workers.is_empty() {
            info!("Upgraded: adopted {serving} workers of the previous binary; they serve until the new ones are ready");
        }
        Ok(Master {
            pid: unistd::getpid(),
            listeners,
            signals: Some(signals),
            poll: Some(poll),
            scoreboard: Some(scoreboard),
            workers,
            state: State::Running,
            target: config.workers,
            config,
            generation: 1,
            next_worker_id: adopted.workers.len() as u32 + 1,
            boot_failures: 0,
            failing_since: None,
            next_spawn_at: now,
            recycle: None,
            last_timeout_check: now,
            start,
            fork_hooks: None,
            events: None,
            notify: Notifier::default(),
            last_reload: None,
            failure: None,
            metrics,
        })
    }

    fn run(&mut self, reload: &mut ReloadFn<'_>, spawn: &mut SpawnFn<'_>) -> Exit {
        let mut events = Events::with_capacity(64);
        loop {
            self.tell_status();
            self.notify.watchdog(Instant::now());
            let timeout = self.next_wakeup().saturating_duration_since(Instant::now());
            if let Some(poll) = self.poll.as_mut() {
                if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        error!("master poll failed: {e}");
                        let status = format!("Stopped: master poll failed: {e}");
                        self.notify.failed(&status, e.raw_os_error());
                        return Exit::Code(exit_code::MASTER_FAILED);
                    }
                }
            }
            for event in events.iter() {
                if event.token() != SIGNAL_TOKEN && !metrics::owns(event.token()) {
                    self.read_reports(Pid::from_raw(event.token().0 as i32));
                }
            }
            let delivered = self
                .signals
                .as_ref()
                .map(SelfPipe::drain)
                .unwrap_or_default();
            for d in delivered {
                self.on_signal(d, reload);
            }
            self.reap();
            self.serve_metrics();
            self.enforce_timeouts();
            if matches!(&self.state, State::Delaying(d) if Instant::now() >= d.until) {
                self.end_delay();
            }
            if let Some(exit) = self.advance_stop() {
                return exit;
            }
            if matches!(self.state, State::Running) {
                if let Some(exit) = self.check_crash_loop() {
                    return exit;
                }
                self.retire_old_generation();
                self.advance_recycle(spawn);
                self.maintain_worker_count(spawn);
                ferricorn_log::statsd::workers(self.current_workers());
            }
        }
    }

    fn next_wakeup(&self) -> Instant {
        let now = Instant::now();
        let mut at = match &self.state {
            // A TCP socket's queue is looked at until it is empty and shut down
            // (a unix one needs no look: it refuses new connections already).
            State::Stopping(stop) if self.listeners.iter().any(|l| !l.socket.is_unix()) => {
                stop.deadline.min(stop.settle_at.max(now + DRAIN_CHECK))
            }
            State::Stopping(stop) => stop.deadline,
            State::Delaying(d) => d.until,
            State::Running if self.current_workers() < self.target as usize => {
                self.next_spawn_at.max(now)
            }
            // Nothing scheduled: signals and worker reports wake the loop.
            State::Running => now + Duration::from_secs(60),
        };
        if self.config.timeout.is_some() || self.workers.iter().any(|w| w.aborted.is_some()) {
            at = at.min(self.last_timeout_check + TIMEOUT_CHECK);
        }
        if let Some(since) = self.failing_since {
            at = at.min(since + self.config.boot_deadline);
        }
        if let Some(due) = self.notify.watchdog_due() {
            at = at.min(due);
        }
        if let Some(due) = self.metrics.as_ref().and_then(Metrics::next_deadline) {
            at = at.min(due);
        }
        at
    }

    fn on_signal(&mut self, d: Delivered, reload: &mut ReloadFn<'_>) {
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
                // tests/it/signals.rs waits for this line: no new connection is admitted once it is logged.
                let reason = format!("{action} after {}{from}", d.signal.as_str());
                let log_line = format!("Handling signal: {name}{from}");
                match (&self.state, mode) {
                    (State::Running, StopMode::Graceful) if !self.config.drain_delay.is_zero() => {
                        self.delay_stop(exit, reason, log_line)
                    }
                    (State::Delaying(_), StopMode::Graceful) => {
                        info!("{log_line}: the drain delay ends now");
                        self.end_delay();
                    }
                    _ => {
                        self.end_delay();
                        self.begin_stop(mode, exit, reason, &log_line);
                    }
                }
            }
            Action::Reload => {
                if !matches!(self.state, State::Running) {
                    info!("Handling signal: {name}{from}: reload ignored: the master is stopping");
                    return;
                }
                let began = ferricorn_log::local_time();
                self.last_reload = Some(format!("last reload {began}"));
                self.notify.reloading(&format!(
                    "Reloading: reading the configuration again ({began})"
                ));
                match reload(&self.config) {
                    Ok(new) => self.apply_config(new),
                    Err(e) => {
                        // tests/it/config.rs waits for this line.
                        error!("Reload failed: {e}; keeping the current configuration and workers");
                        self.last_reload = Some(format!("last reload {began} failed: {e}"));
                        return;
                    }
                }
                info!(
                    "Handling signal: {name}{from}: reloading (new generation of {} workers)",
                    self.target
                );
                self.generation += 1;
                self.next_spawn_at = Instant::now();
                if let Some(m) = self.metrics.as_mut() {
                    m.reloaded();
                }
            }
            Action::AddWorker => {
                let target = self
                    .target
                    .saturating_add(d.count)
                    .min(MAX_WORKERS as u32 / 2);
                info!("Handling signal: {name}{from}: workers now {target}");
                self.set_target(target);
            }
            Action::RemoveWorker => {
                let target = self.target.saturating_sub(d.count).max(1);
                info!("Handling signal: {name}{from}: workers now {target}");
                self.set_target(target);
            }
            Action::ReopenLogs => {
                // Made here, as root if the master is, and handed to the workers'
                // user: after a rotation they may not create files where it lives.
                let owner = self.config.user.zip(self.config.group);
                if let Some(path) = &self.config.error_log {
                    if let Err(e) = ferricorn_log::redirect_stderr(path, owner) {
                        error!("cannot reopen the error log {path}: {e}");
                    }
                }
                if let Some(path) = self.config.access_log.as_deref().filter(|p| *p != "-") {
                    if let Err(e) = ferricorn_log::open_log_file(path, owner) {
                        error!("cannot reopen the access log {path}: {e}");
                    }
                }
                info!("Handling signal: {name}{from}: reopening log files (workers too)");
                for w in self.workers.iter() {
                    let _ = kill(w.pid, Signal::SIGUSR1);
                }
            }
            Action::Upgrade => self.upgrade(&format!("Handling signal: {name}{from}")),
            Action::Ignore => info!("Handling signal: {name}{from}: ignored"),
        }
    }

    /// Take a re-read configuration (HUP). Workers started from now on use it; the
    /// listening sockets stay open, with the backlog and deferred accepts it names.
    fn apply_config(&mut self, new: Config) {
        if new.binds != self.config.binds {
            warn!("bind changed in the configuration; a reload keeps the current sockets (restart to listen elsewhere)");
        }
        if new.metrics_bind != self.config.metrics_bind {
            warn!("metrics_bind changed in the configuration; a reload keeps the current metrics address (restart to use the new one)");
        }
        if (&new.certfile, &new.keyfile) != (&self.config.certfile, &self.config.keyfile) {
            warn!("certfile or keyfile changed in the configuration; a reload keeps serving the certificate loaded at start (restart to use the new one)");
        }
        if new.reuse_port != self.config.reuse_port {
            warn!("reuse_port changed in the configuration; a reload keeps the current sockets as they were bound (restart to change it)");
        }
        if (new.backlog, new.defer_accept) != (self.config.backlog, self.config.defer_accept) {
            match apply_options(&self.listeners, new.backlog, new.defer_accept) {
                Ok(()) => info!(
                    "listening sockets now have backlog {} and deferred accepts {}",
                    new.backlog,
                    if new.defer_accept { "on" } else { "off" }
                ),
                Err(e) => warn!(
                    "cannot give the listening sockets the new backlog and deferred accepts: {e}"
                ),
            }
        }
        ferricorn_log::set_level(new.log_level);
        self.set_target(new.workers);
        self.config = new;
    }

    /// The number of workers to keep from now on; the events hear of a change.
    fn set_target(&mut self, target: u32) {
        let old = std::mem::replace(&mut self.target, target);
        if old != target {
            if let Some(events) = self.events.as_mut() {
                events.workers_changed(target, old);
            }
        }
    }

    /// Re-execute the binary in place, keeping sockets and workers (see `upgrade`).
    fn upgrade(&mut self, log_line: &str) {
        if !matches!(self.state, State::Running) {
            info!("{log_line}: upgrade ignored: the master is stopping");
            return;
        }
        let Some(start) = self.start.clone() else {
            warn!("{log_line}: upgrade ignored: the start command is unknown");
            return;
        };
        // All of them, retiring ones too: they keep their slots until they exit.
        let workers: Vec<AdoptedWorker> = self
            .workers
            .iter()
            .map(|w| AdoptedWorker {
                pid: w.pid,
                slot: (w.slot != usize::MAX).then_some(w.slot),
                assigned_ms: Some(w.assigned_ms),
                ready: w.ready,
                retiring: w.retiring,
            })
            .collect();
        // tests/it/upgrade.rs waits for this line.
        info!(
            "{log_line}: upgrading: exec {} with {} listening sockets; {} workers keep serving until the new ones are ready",
            start.exe.display(),
            self.listeners.len(),
            workers.iter().filter(|w| !w.retiring).count()
        );
        if let Some(events) = self.events.as_mut() {
            events.upgrading();
        }
        self.notify.status(&format!(
            "Upgrading: exec {}; {} workers keep serving until the new ones are ready",
            start.exe.display(),
            workers.len()
        ));
        let board = self.scoreboard.as_ref().and_then(Scoreboard::fd);
        let err = upgrade::exec(
            &start,
            &self.listeners,
            &workers,
            board,
            self.notify.exec_env(),
        );
        error!(
            "Upgrade failed: cannot exec {}: {err}; still running the current binary",
            start.exe.display()
        );
    }

    /// `--drain-delay`: hold a graceful stop while a load balancer takes this
    /// server out; it keeps accepting, and every response says `Connection: close`.
    fn delay_stop(&mut self, exit: Exit, reason: String, log_line: String) {
        let delay = self.config.drain_delay;
        // tests/it/stops.rs waits for this line.
        info!(
            "{log_line}: {reason}; serving on for the {:.1}s drain delay (--drain-delay), closing each connection after its response",
            delay.as_secs_f64()
        );
        if let Some(board) = self.scoreboard.as_ref() {
            board.set_draining(true);
        }
        self.notify.stopping(&format!(
            "Stopping: drain delay of {:.1}s, then {reason}",
            delay.as_secs_f64()
        ));
        self.state = State::Delaying(Delayed {
            exit,
            reason,
            log_line,
            until: Instant::now() + delay,
        });
    }

    /// A held graceful stop begins now (its delay is over, or was cut short);
    /// nothing when none is held.
    fn end_delay(&mut self) {
        if !matches!(self.state, State::Delaying(_)) {
            return;
        }
        let State::Delaying(d) = std::mem::replace(&mut self.state, State::Running) else {
            return;
        };
        if let Some(board) = self.scoreboard.as_ref() {
            board.set_draining(false);
        }
        self.begin_stop(StopMode::Graceful, d.exit, d.reason, &d.log_line);
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
        // Admit no new connections before anything else, for every process sharing
        // the sockets; the workers drain what the kernel already queued.
        self.listeners = stop_admitting(std::mem::take(&mut self.listeners));
        let (signal, grace) = match mode {
            StopMode::Graceful => (Signal::SIGTERM, self.config.graceful_timeout),
            StopMode::Quick => (Signal::SIGQUIT, QUICK_GRACE),
        };
        let busy = self.busy_workers();
        info!(
            "{log_line}: {reason}; {} workers, {} requests in flight; up to {:.1}s",
            self.workers.len(),
            busy.len(),
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
            busy_at_start: busy,
            killed: Vec::new(),
            kill_sent: false,
            settle_at: now + SETTLE,
        });
        self.notify.stopping(&self.status_line());
    }

    /// Workers inside the app right now.
    fn busy_workers(&self) -> Vec<Pid> {
        let now = now_ms();
        let Some(board) = self.scoreboard.as_ref() else {
            return Vec::new();
        };
        self.workers
            .iter()
            .filter(|w| {
                board
                    .slot(w.slot)
                    .is_some_and(|s| s.in_request(now, w.assigned_ms).is_some())
            })
            .map(|w| w.pid)
            .collect()
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
        if !self.listeners.is_empty() && Instant::now() >= stop.settle_at {
            close_drained(&mut self.listeners);
        }
        if self.workers.is_empty() {
            let unserved = answer_unserved(std::mem::take(&mut self.listeners));
            if unserved > 0 {
                warn!("{unserved} queued connections were answered 503: no worker was left to serve them");
            }
            let in_flight = stop.busy_at_start.len();
            let cut = stop
                .busy_at_start
                .iter()
                .filter(|p| stop.killed.contains(p))
                .count();
            let exit = if stop.mode == StopMode::Graceful && !stop.killed.is_empty() {
                Exit::Code(exit_code::DRAIN_DEADLINE_EXCEEDED)
            } else {
                stop.exit
            };
            let requests = match stop.mode {
                StopMode::Graceful => format!(
                    "{} of {in_flight} requests in flight finished",
                    in_flight - cut
                ),
                StopMode::Quick => format!("{in_flight} requests in flight cut"),
            };
            // tests/it/signals.rs reads this line.
            info!(
                "Shutting down: {}; {requests}; {} of {} workers stopped in time, {} killed; {:.2}s; exiting with {}",
                stop.reason,
                stop.workers_at_start.saturating_sub(stop.killed.len()),
                stop.workers_at_start,
                stop.killed.len(),
                stop.began.elapsed().as_secs_f64(),
                exit
            );
            self.tell_failure();
            return Some(exit);
        }
        let now = Instant::now();
        if now >= stop.deadline {
            if stop.kill_sent {
                error!(
                    "{} workers did not exit after SIGKILL; exiting anyway",
                    self.workers.len()
                );
                let exit = stop.exit;
                self.tell_failure();
                return Some(exit);
            }
            warn!(
                "{} workers still running at the stop deadline; sending SIGKILL",
                self.workers.len()
            );
            stop.kill_sent = true;
            stop.deadline = now + KILL_REAP_GRACE;
            for w in self.workers.iter_mut() {
                stop.killed.push(w.pid);
                w.killed_for = Some("the stop deadline passed".into());
                let _ = kill(w.pid, Signal::SIGKILL);
            }
        }
        None
    }

    /// `--timeout`: a worker too long in one request, silent, or booting gets
    /// SIGABRT (its Python traceback is written to the error log), then SIGKILL.
    fn enforce_timeouts(&mut self) {
        let now = Instant::now();
        if now < self.last_timeout_check + TIMEOUT_CHECK {
            return;
        }
        self.last_timeout_check = now;
        let now_ms = now_ms();
        let limit = self.config.timeout;
        let Some(board) = self.scoreboard.as_ref() else {
            return;
        };
        for w in self.workers.iter_mut() {
            if let Some((at, why)) = &w.aborted {
                if w.killed_for.is_none() && now.duration_since(*at) >= ABORT_GRACE {
                    warn!(
                        "Worker {} (pid: {}) is still alive after SIGABRT; sending SIGKILL",
                        w.id, w.pid
                    );
                    w.killed_for = Some(why.clone());
                    let _ = kill(w.pid, Signal::SIGKILL);
                }
                continue;
            }
            let Some(limit) = limit else { continue };
            let secs = limit.as_secs();
            let slot = board.slot(w.slot);
            // Only the master's own records decide "did not boot"; the slot says
            // no more than what the worker in it reports about itself.
            let why = if !w.ready {
                (now_ms.saturating_sub(w.assigned_ms) > limit.as_millis() as u64)
                    .then(|| format!("it did not boot within the {secs}s timeout"))
            } else if let Some((busy_ms, line)) =
                slot.and_then(|s| s.in_request(now_ms, w.assigned_ms))
            {
                (busy_ms > limit.as_millis() as u64).then(|| {
                    format!(
                        "it spent {:.1}s in `{line}`, over the {secs}s timeout",
                        busy_ms as f64 / 1000.0
                    )
                })
            } else {
                let Some(silent) = slot.map(|s| s.silent_for(now_ms, w.assigned_ms)) else {
                    continue;
                };
                (silent > limit.as_millis() as u64).then(|| {
                    format!(
                        "its loop has not run for {:.1}s, over the {secs}s timeout",
                        silent as f64 / 1000.0
                    )
                })
            };
            if let Some(why) = why {
                // gunicorn prints "WORKER TIMEOUT"; log parsers look for it.
                error!(target: ferricorn_log::CRITICAL, "WORKER TIMEOUT: worker {} (pid: {}): {why}; dumping its traceback and killing it", w.id, w.pid);
                w.aborted = Some((now, format!("timeout: {why}")));
                let _ = kill(w.pid, Signal::SIGABRT);
            }
        }
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
        if let Some(events) = self.events.as_mut() {
            events.worker_exited(pid.as_raw(), slot.id);
        }
        if let Some(m) = self.metrics.as_mut() {
            let crashed = !matches!(end, WorkerEnd::Code(0));
            let stopping = matches!(self.state, State::Stopping(_));
            let cause = ExitCause::of(&slot, crashed, stopping, self.generation);
            m.worker_exited(&slot, cause, self.scoreboard.as_ref());
        }
        if let Some(board) = self.scoreboard.as_ref() {
            board.release(slot.slot);
        }
        if let (Some(poll), Some(fd)) = (self.poll.as_ref(), slot.status_fd()) {
            let _ = poll.registry().deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        let who = format!("Worker {} (pid: {pid})", slot.id);
        // Say who ended it: the master (and why), or something outside.
        let cause = match (&slot.killed_for, &slot.aborted, end) {
            (Some(why), _, _) => format!("{end}, sent by the master: {why}"),
            (None, Some((_, why)), WorkerEnd::Signal(Signal::SIGABRT)) => {
                format!("{end}, sent by the master: {why}")
            }
            (None, _, WorkerEnd::Signal(_)) => format!("{end}, not sent by the master"),
            (None, _, WorkerEnd::Code(_)) => end.to_string(),
        };
        let stopping = matches!(self.state, State::Stopping(_));
        if stopping || slot.retiring {
            info!("{who} exited ({cause})");
            return;
        }
        // A worker that never became ready and says why (or exits 3/4) halts the
        // server: respawning it would only fail again.
        let code = match (&slot.failure, end) {
            (Some((c, _)), _) => Some(*c),
            (None, WorkerEnd::Code(c))
                if c == i32::from(exit_code::WORKER_BOOT_FAILED)
                    || c == i32::from(exit_code::APP_LOAD_FAILED) =>
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
            self.failure = Some(message);
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
            warn!("{who} {cause}; starting a new one");
        } else {
            self.boot_failures += 1;
            self.failing_since.get_or_insert_with(Instant::now);
            let backoff = boot_backoff(self.boot_failures);
            self.next_spawn_at = Instant::now() + backoff;
            warn!(
                "{who} {cause} before it was ready; starting a new one in {:.1}s",
                backoff.as_secs_f64()
            );
        }
    }

    /// Workers keep dying before they are ready and none is serving: stop rather
    /// than respawn forever.
    fn check_crash_loop(&mut self) -> Option<Exit> {
        let since = self.failing_since?;
        let deadline = self.config.boot_deadline;
        if since.elapsed() < deadline {
            return None;
        }
        let gen = self.generation;
        if self.workers.iter().any(|w| w.ready && w.generation == gen) {
            return None;
        }
        let message = format!(
            "workers of the new generation kept dying before they were ready ({} failures in {}s)",
            self.boot_failures,
            deadline.as_secs()
        );
        // A reload that cannot boot: the previous generation goes on serving.
        if self.abandon_reload(gen, &message) {
            self.boot_failures = 0;
            self.failing_since = None;
            return None;
        }
        if self.workers.iter().any(|w| w.ready) {
            return None;
        }
        let message = format!(
            "workers kept dying before they were ready ({} failures in {}s) and none became ready",
            self.boot_failures,
            deadline.as_secs()
        );
        error!("Giving up: {message}");
        self.failure = Some(message);
        self.begin_stop(
            StopMode::Quick,
            Exit::Code(exit_code::CRASH_LOOP),
            "crash loop".into(),
            "Crash loop",
        );
        self.failing_since = None;
        None
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
        let kept = self
            .workers
            .iter()
            .filter(|w| w.generation == previous)
            .count();
        // tests/it/supervision.rs waits for this line.
        error!("Reload failed: {message}; keeping the {kept} workers of the previous generation");
        // READY=1 follows as soon as the previous generation is complete again.
        let began = self
            .last_reload
            .take()
            .unwrap_or_else(|| "last upgrade".into());
        self.last_reload = Some(format!("{began} failed: {message}"));
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
                    self.failing_since = None;
                    // tests/it wait for this line before sending requests.
                    info!("Worker {} (pid: {pid}) ready", slot.id);
                }
                Report::Recycle => {
                    slot.wants_recycle = true;
                    info!(
                        "Worker {} (pid: {pid}) reached --max-requests; starting its replacement",
                        slot.id
                    );
                }
                Report::Failed { code, message } => slot.failure = Some((code, message)),
            }
        }
    }

    /// `--metrics-bind`: answer what the metrics connections asked, from the
    /// state the loop has just brought up to date.
    fn serve_metrics(&mut self) {
        if let (Some(m), Some(poll)) = (self.metrics.as_mut(), self.poll.as_ref()) {
            let view = metrics::View {
                board: self.scoreboard.as_ref(),
                workers: &self.workers,
                listeners: &self.listeners,
                stopping: matches!(self.state, State::Stopping(_) | State::Delaying(_)),
            };
            m.serve(poll.registry(), &view);
        }
    }

    /// Workers that count toward the target: this generation, not stopping, and
    /// not the one a recycle is replacing.
    fn current_workers(&self) -> usize {
        let recycling = self.recycle.as_ref().map(|r| r.old);
        self.workers
            .iter()
            .filter(|w| w.generation == self.generation && !w.retiring && Some(w.pid) != recycling)
            .count()
    }

    /// Once the generation is complete and ready: tell systemd if it waits for that
    /// (at start, after a reload or an upgrade), and stop the previous generation.
    fn retire_old_generation(&mut self) {
        let (ready, _) = self.ready_workers();
        if ready < self.target as usize {
            return;
        }
        if self.notify.owes_ready() {
            self.notify.ready(&self.serving_status());
        }
        let gen = self.generation;
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

    /// Ready workers serving, of this generation and of previous ones.
    fn ready_workers(&self) -> (usize, usize) {
        let serving = || self.workers.iter().filter(|w| w.ready && !w.retiring);
        let current = serving()
            .filter(|w| w.generation == self.generation)
            .count();
        (current, serving().count() - current)
    }

    /// What `systemctl status` shows (see notify.rs); sent when it changes.
    fn tell_status(&mut self) {
        if self.notify.is_active() {
            self.notify.status(&self.status_line());
        }
    }

    fn status_line(&self) -> String {
        let (current, previous) = self.ready_workers();
        let target = self.target;
        match &self.state {
            State::Stopping(stop) => format!(
                "Stopping: {}; {} left",
                stop.reason,
                workers(self.workers.len())
            ),
            State::Delaying(d) => format!("Stopping: drain delay, then {}", d.reason),
            State::Running if previous > 0 => {
                // Generation 0: adopted from the binary before an upgrade.
                let (doing, whose) = if self.workers.iter().any(|w| w.generation == 0) {
                    ("Upgrading", "binary")
                } else {
                    ("Reloading", "generation")
                };
                format!(
                    "{doing}: {current} of {target} new workers ready; {} of the previous {whose} serving",
                    workers(previous)
                )
            }
            State::Running if !self.notify.was_ready() => {
                let failures = match self.boot_failures {
                    0 => String::new(),
                    n => format!("; {n} died before they were ready"),
                };
                format!("Starting: {current} of {target} workers ready{failures}")
            }
            State::Running => self.serving_status(),
        }
    }

    /// "2 workers ready, serving on http://127.0.0.1:8000; last reload …".
    fn serving_status(&self) -> String {
        let (current, _) = self.ready_workers();
        let ready = if current >= self.target as usize {
            workers(current)
        } else {
            format!("{current} of {}", workers(self.target as usize))
        };
        let addrs: Vec<String> = self.listeners.iter().map(|l| l.addr.to_string()).collect();
        let reload = self
            .last_reload
            .as_ref()
            .map(|r| format!("; {r}"))
            .unwrap_or_default();
        format!("{ready} ready, serving on {}{reload}", addrs.join(", "))
    }

    /// The master stops on its own (workers that cannot boot): the last status says why.
    fn tell_failure(&mut self) {
        if let Some(why) = self.failure.take() {
            let when = if self.notify.was_ready() {
                "Stopped"
            } else {
                "Failed to start"
            };
            self.notify.failed(&format!("{when}: {why}"), None);
        }
    }

    /// `--max-requests`, one worker at a time: start the replacement, and stop the
    /// old worker only once the replacement is ready, so capacity never drops and
    /// no connection waits on a worker that is leaving.
    fn advance_recycle(&mut self, spawn: &mut SpawnFn<'_>) {
        if self.recycle.is_none() {
            let next = self
                .workers
                .iter()
                .find(|w| w.wants_recycle && !w.retiring)
                .map(|w| w.pid);
            self.recycle = next.map(|old| Recycle {
                old,
                replacement: None,
            });
        }
        let Some(recycle) = self.recycle.as_mut() else {
            return;
        };
        let Some(old) = self.workers.get_mut(recycle.old) else {
            self.recycle = None;
            return;
        };
        if old.retiring {
            self.recycle = None;
            return;
        }
        match recycle.replacement {
            Some(new) if self.workers.iter().any(|w| w.pid == new && w.ready) => {
                let old = self.workers.get_mut(recycle.old).expect("checked above");
                info!(
                    "Stopping worker {} (pid: {}): its replacement is ready",
                    old.id, old.pid
                );
                old.retiring = true;
                let _ = kill(old.pid, Signal::SIGTERM);
                self.recycle = None;
            }
            Some(new) if self.workers.iter().any(|w| w.pid == new) => {} // booting
            _ if Instant::now() >= self.next_spawn_at => match self.spawn_worker(spawn) {
                Ok(pid) => {
                    if let Some(r) = self.recycle.as_mut() {
                        r.replacement = Some(pid);
                    }
                }
                Err(e) => error!("cannot start a replacement worker: {e}"),
            },
            _ => {}
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
        // While workers are failing to boot, start them one at a time: the next
        // only once the one booting is ready or has died too.
        let booting = |w: &WorkerSlot| w.generation == self.generation && !w.ready && !w.retiring;
        if self.boot_failures > 0 && self.workers.iter().any(booting) {
            return;
        }
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

    fn free_slot(&self) -> Option<usize> {
        let used: Vec<usize> = self.workers.iter().map(|w| w.slot).collect();
        (0..MAX_WORKERS).find(|i| !used.contains(i))
    }

    fn spawn_worker(&mut self, spawn: &mut SpawnFn<'_>) -> nix::Result<Pid> {
        let slot = self.free_slot().ok_or(nix::Error::EAGAIN)?;
        let (status_read, status_write) = unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let id = self.next_worker_id;
        // The master assigns, before the fork: the worker never writes outside its slot.
        let assigned_ms = match self.scoreboard.as_ref() {
            Some(board) => board.assign(slot),
            None => now_ms(),
        };
        let old_mask = sys::block_all().map_err(|_| nix::Error::last())?;
        if let Some(h) = self.fork_hooks.as_mut() {
            h.before();
        }
        let forked = fork_single_threaded();
        let mut board = Ok(());
        match &forked {
            Ok(ForkResult::Child) => {
                // First of all: the fork hooks run Python's at-fork callbacks,
                // which with --preload are the app's.
                board = self.restrict_scoreboard(slot);
                if let Some(h) = self.fork_hooks.as_mut() {
                    h.after_child();
                }
            }
            _ => {
                if let Some(h) = self.fork_hooks.as_mut() {
                    h.after_parent();
                }
            }
        }
        match forked {
            Ok(ForkResult::Child) => {
                drop(status_read);
                let code = match board {
                    Ok(()) => self.become_worker(spawn, status_write, id, slot),
                    Err(e) => {
                        let code = exit_code::WORKER_BOOT_FAILED;
                        let message = format!(
                            "Worker failed to boot: cannot map the scoreboard read-only: {e}"
                        );
                        let report = Report::Failed { code, message }.encode();
                        let _ = std::fs::File::from(status_write).write_all(&report);
                        code
                    }
                };
                std::process::exit(i32::from(code));
            }
            Ok(ForkResult::Parent { child }) => {
                let _ = sys::set_mask(&old_mask);
                drop(status_write);
                self.next_worker_id += 1;
                let worker =
                    WorkerSlot::new(child, id, self.generation, (slot, assigned_ms), status_read);
                if let (Some(poll), Some(fd)) = (self.poll.as_ref(), worker.status_fd()) {
                    let _ = poll.registry().register(
                        &mut SourceFd(&fd.as_raw_fd()),
                        Token(child.as_raw() as usize),
                        Interest::READABLE,
                    );
                }
                self.workers.insert(worker);
                // gunicorn prints the same line; log parsers look for it.
                info!("Booting worker with pid: {child}");
                Ok(child)
            }
            Err(e) => {
                let _ = sys::set_mask(&old_mask);
                Err(e)
            }
        }
    }

    /// In the child, before any other code runs (and before privileges are
    /// dropped): from here on this process can write its own slot of the
    /// scoreboard and nothing else of it. If it cannot, it must not run the app.
    fn restrict_scoreboard(&mut self, slot: usize) -> std::io::Result<()> {
        match self.scoreboard.as_mut() {
            Some(board) => board.restrict_to(slot),
            None => Ok(()),
        }
    }

    /// In the child, before anything else: put back the signal dispositions the
    /// master installed and close the master's fds, then hand over to the worker.
    /// The signal mask stays fully blocked until the worker has installed its own
    /// handlers, so no signal meets a default action in between.
    fn become_worker(
        &mut self,
        spawn: &mut SpawnFn<'_>,
        status: OwnedFd,
        worker_id: u32,
        slot: usize,
    ) -> u8 {
        if let Some(signals) = self.signals.take() {
            signals.reset_in_child();
        }
        self.poll = None;
        self.metrics = None;
        self.notify = Notifier::default();
        self.workers.forget_all();
        let listeners = self.listeners.drain(..).map(|l| l.socket).collect();
        let Some(scoreboard) = self.scoreboard.take() else {
            return exit_code::WORKER_BOOT_FAILED;
        };
        let config = self.config.clone();
        spawn(
            &config,
            ChildStart {
                listeners,
                status,
                worker_id,
                master_pid: self.pid,
                scoreboard,
                slot,
            },
        )
    }
}

/// "1 worker", "2 workers".
fn workers(n: usize) -> String {
    format!("{n} worker{}", if n == 1 { "" } else { "s" })
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
