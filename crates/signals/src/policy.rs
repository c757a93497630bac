//! The signal policy: what the master does on each signal and how it then exits.

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;

/// What the master does, named for the effect rather than the signal that triggers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop accepting, let workers finish their in-flight requests, then exit.
    GracefulStop,
    /// Stop accepting and stop workers now, cutting in-flight requests, then exit.
    QuickStop,
    /// Start a new generation of workers, then gracefully stop the old one.
    Reload,
    /// Reopen log files.
    ReopenLogs,
    /// Run one more worker.
    AddWorker,
    /// Run one worker fewer (never below one).
    RemoveWorker,
    /// Replace the master binary without dropping the listening sockets.
    Upgrade,
    /// Log and do nothing.
    Ignore,
}

impl Action {
    /// The stop mode this action starts, if it is a stop.
    pub fn stop_mode(self) -> Option<StopMode> {
        match self {
            Action::GracefulStop => Some(StopMode::Graceful),
            Action::QuickStop => Some(StopMode::Quick),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::GracefulStop => "graceful stop",
            Action::QuickStop => "quick stop",
            Action::Reload => "reload",
            Action::ReopenLogs => "reopen logs",
            Action::AddWorker => "add worker",
            Action::RemoveWorker => "remove worker",
            Action::Upgrade => "upgrade",
            Action::Ignore => "ignore",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopMode {
    Graceful,
    Quick,
}

/// How the master exits after a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitRule {
    /// Die by the signal that caused the stop, so a shell reads 128+n and systemd
    /// reads a clean stop. As PID 1 (where a self-raised signal is ignored), exit 128+n.
    Signal,
    /// Exit with this code.
    Code(u8),
}

/// The rule `--term-exit` and its siblings take: `signal` or a number 0..=255.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected `signal` or an exit code from 0 to 255")]
pub struct ParseExitRuleError;

impl FromStr for ExitRule {
    type Err = ParseExitRuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("signal") {
            return Ok(ExitRule::Signal);
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseExitRuleError);
        }
        s.parse::<u8>()
            .map(ExitRule::Code)
            .map_err(|_| ParseExitRuleError)
    }
}

impl fmt::Display for ExitRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitRule::Signal => f.write_str("signal"),
            ExitRule::Code(c) => write!(f, "{c}"),
        }
    }
}

/// How the process ends: a value the master loop returns and `main` carries out last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(u8),
    Signal(Signal),
}

impl Exit {
    /// The status a POSIX shell reports for this exit (`$?`).
    pub fn shell_status(self) -> u8 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128u8.wrapping_add(s as i32 as u8),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "{} (status {})", s.as_str(), self.shell_status()),
        }
    }
}

/// The master's table: signal → action, and the exit rule of each stopping signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rows: Vec<Row>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row {
    signal: Signal,
    action: Action,
    exit: ExitRule,
}

impl Default for Policy {
    fn default() -> Self {
        use Action::*;
        let row = |signal, action| Row {
            signal,
            action,
            exit: ExitRule::Signal,
        };
        Policy {
            rows: vec![
                row(Signal::SIGTERM, GracefulStop),
                row(Signal::SIGINT, QuickStop),
                row(Signal::SIGQUIT, QuickStop),
                row(Signal::SIGHUP, Reload),
                row(Signal::SIGTTIN, AddWorker),
                row(Signal::SIGTTOU, RemoveWorker),
                row(Signal::SIGUSR1, ReopenLogs),
                row(Signal::SIGUSR2, Upgrade),
                row(Signal::SIGWINCH, Ignore),
            ],
        }
    }
}

impl Policy {
    /// The signals the master installs handlers for (SIGCHLD is always added by the master).
    pub fn signals(&self) -> impl Iterator<Item = Signal> + '_ {
        self.rows.iter().map(|r| r.signal)
    }

    pub fn action(&self, signal: Signal) -> Action {
        self.row(signal).map_or(Action::Ignore, |r| r.action)
    }

    pub fn exit_rule(&self, signal: Signal) -> ExitRule {
        self.row(signal).map_or(ExitRule::Signal, |r| r.exit)
    }

    /// The exit that follows a stop caused by `signal`, given whether this process is PID 1.
    pub fn exit_for(&self, signal: Signal, is_pid1: bool) -> Exit {
        match self.exit_rule(signal) {
            ExitRule::Code(c) => Exit::Code(c),
            ExitRule::Signal if is_pid1 => Exit::Code(Exit::Signal(signal).shell_status()),
            ExitRule::Signal => Exit::Signal(signal),
        }
    }

    /// Override the exit rule of one signal (`--term-exit`, `--int-exit`, `--quit-exit`).
    pub fn set_exit(&mut self, signal: Signal, exit: ExitRule) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.signal == signal) {
            r.exit = exit;
        }
    }

    fn row(&self, signal: Signal) -> Option<&Row> {
        self.rows.iter().find(|r| r.signal == signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Signal::*;

    #[test]
    fn default_table() {
        let p = Policy::default();
        let cases = [
            (SIGTERM, Action::GracefulStop, Exit::Signal(SIGTERM)),
            (SIGINT, Action::QuickStop, Exit::Signal(SIGINT)),
            (SIGQUIT, Action::QuickStop, Exit::Signal(SIGQUIT)),
            (SIGHUP, Action::Reload, Exit::Signal(SIGHUP)),
            (SIGTTIN, Action::AddWorker, Exit::Signal(SIGTTIN)),
            (SIGTTOU, Action::RemoveWorker, Exit::Signal(SIGTTOU)),
            (SIGUSR1, Action::ReopenLogs, Exit::Signal(SIGUSR1)),
            (SIGUSR2, Action::Upgrade, Exit::Signal(SIGUSR2)),
            (SIGWINCH, Action::Ignore, Exit::Signal(SIGWINCH)),
            // A signal with no row is ignored rather than acted on.
            (SIGPWR, Action::Ignore, Exit::Signal(SIGPWR)),
        ];
        for (sig, action, exit) in cases {
            assert_eq!(p.action(sig), action, "{sig}");
            assert_eq!(p.exit_for(sig, false), exit, "{sig}");
        }
    }

    #[test]
    fn shell_status_is_128_plus_n() {
        assert_eq!(Exit::Signal(SIGTERM).shell_status(), 143);
        assert_eq!(Exit::Signal(SIGINT).shell_status(), 130);
        assert_eq!(Exit::Signal(SIGQUIT).shell_status(), 131);
        assert_eq!(Exit::Code(3).shell_status(), 3);
    }

    #[test]
    fn pid1_exits_with_128_plus_n() {
        // A self-raised default-action signal is ignored by the kernel for PID 1.
        let p = Policy::default();
        assert_eq!(p.exit_for(SIGTERM, true), Exit::Code(143));
    }

    #[test]
    fn overrides() {
        let mut p = Policy::default();
        p.set_exit(SIGTERM, ExitRule::Code(0));
        p.set_exit(SIGINT, ExitRule::Code(3));
        assert_eq!(p.exit_for(SIGTERM, false), Exit::Code(0));
        assert_eq!(p.exit_for(SIGTERM, true), Exit::Code(0));
        assert_eq!(p.exit_for(SIGINT, false), Exit::Code(3));
        assert_eq!(p.exit_for(SIGQUIT, false), Exit::Signal(SIGQUIT));
    }

    #[test]
    fn parse_exit_rule() {
        let ok = [
            ("signal", ExitRule::Signal),
            ("SIGNAL", ExitRule::Signal),
            ("0", ExitRule::Code(0)),
            ("255", ExitRule::Code(255)),
            (" 3 ", ExitRule::Code(3)),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<ExitRule>(), Ok(want), "{s:?}");
        }
        // Out of range, signs and junk are refused, never wrapped.
        for s in ["256", "-1", "+3", "", "sig", "1.0", "0x3"] {
            assert!(s.parse::<ExitRule>().is_err(), "{s:?}");
        }
    }
}
