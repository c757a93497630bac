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

impl Action {
    pub const ALL: [Action; 8] = [
        Action::GracefulStop,
        Action::QuickStop,
        Action::Reload,
        Action::ReopenLogs,
        Action::AddWorker,
        Action::RemoveWorker,
        Action::Upgrade,
        Action::Ignore,
    ];

    /// The name used on the command line and in config files: `graceful-stop`, ….
    pub fn name(self) -> &'static str {
        match self {
            Action::GracefulStop => "graceful-stop",
            Action::QuickStop => "quick-stop",
            Action::Reload => "reload",
            Action::ReopenLogs => "reopen-logs",
            Action::AddWorker => "add-worker",
            Action::RemoveWorker => "remove-worker",
            Action::Upgrade => "upgrade",
            Action::Ignore => "ignore",
        }
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Action::ALL
            .into_iter()
            .find(|a| a.name() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
                format!("unknown action `{s}`; expected one of {}", names.join(", "))
            })
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

/// The signals whose action can be configured. KILL and STOP cannot be caught; CHLD
/// is how the master learns that a worker exited.
pub const CONFIGURABLE: [Signal; 9] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// `TERM`, `SIGTERM`, `term` → SIGTERM, for the configurable signals.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let upper = s.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    CONFIGURABLE
        .into_iter()
        .find(|sig| &sig.as_str()[3..] == name)
        .ok_or_else(|| {
            let names: Vec<&str> = CONFIGURABLE.iter().map(|s| &s.as_str()[3..]).collect();
            format!(
                "`{s}` is not a signal ferricorn lets you configure; expected one of {}",
                names.join(", ")
            )
        })
}

/// One `--on-signal` override: `TERM=graceful-stop`, `HUP=graceful-stop:0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    pub signal: Signal,
    pub action: Action,
    pub exit: Option<ExitRule>,
}

impl FromStr for Override {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (sig, rest) = s.split_once('=').ok_or_else(|| {
            format!("`{s}`: expected SIGNAL=ACTION[:EXIT], e.g. TERM=graceful-stop:0")
        })?;
        let (action, exit) = match rest.split_once(':') {
            Some((a, e)) => (
                a,
                Some(e.parse::<ExitRule>().map_err(|e| format!("`{s}`: {e}"))?),
            ),
            None => (rest, None),
        };
        let action: Action = action.parse()?;
        if exit.is_some() && action.stop_mode().is_none() {
            return Err(format!(
                "`{s}`: an exit rule only applies to graceful-stop and quick-stop"
            ));
        }
        Ok(Override {
            signal: parse_signal(sig)?,
            action,
            exit,
        })
    }
}

/// Named tables to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Stops die by their signal (143, 130, 131).
    Ferricorn,
    /// gunicorn's table: every stop exits 0.
    Gunicorn,
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ferricorn" => Ok(Preset::Ferricorn),
            "gunicorn" => Ok(Preset::Gunicorn),
            _ => Err(format!(
                "unknown signal preset `{s}`; expected ferricorn or gunicorn"
            )),
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
    pub fn preset(preset: Preset) -> Policy {
        let mut p = Policy::default();
        if preset == Preset::Gunicorn {
            for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT] {
                p.set_exit(sig, ExitRule::Code(0));
            }
        }
        p
    }

    /// Apply one `--on-signal` override.
    pub fn apply(&mut self, o: Override) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.signal == o.signal) {
            r.action = o.action;
            if let Some(exit) = o.exit {
                r.exit = exit;
            }
        }
    }

    /// Every row: (signal, action, the exit a stop by it leads to when not PID 1).
    pub fn rows(&self) -> impl Iterator<Item = (Signal, Action, Option<Exit>)> + '_ {
        self.rows.iter().map(|r| {
            (
                r.signal,
                r.action,
                r.action.stop_mode().map(|_| self.exit_for(r.signal, false)),
            )
        })
    }

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
    fn gunicorn_preset_exits_0_on_every_stop() {
        let p = Policy::preset(Preset::Gunicorn);
        for sig in [SIGTERM, SIGINT, SIGQUIT] {
            assert_eq!(p.exit_for(sig, false), Exit::Code(0), "{sig}");
        }
        assert_eq!(p.action(SIGTERM), Action::GracefulStop);
        assert_eq!(p.action(SIGINT), Action::QuickStop);
    }

    #[test]
    fn overrides_parse_and_apply() {
        let mut p = Policy::default();
        for (text, sig, action, exit) in [
            (
                "TERM=quick-stop",
                SIGTERM,
                Action::QuickStop,
                Some(Exit::Signal(SIGTERM)),
            ),
            (
                "sighup=graceful-stop:0",
                SIGHUP,
                Action::GracefulStop,
                Some(Exit::Code(0)),
            ),
            ("usr2=ignore", SIGUSR2, Action::Ignore, None),
            ("WINCH=remove_worker", SIGWINCH, Action::RemoveWorker, None),
        ] {
            p.apply(text.parse().unwrap());
            assert_eq!(p.action(sig), action, "{text}");
            let row = p.rows().find(|r| r.0 == sig).unwrap();
            assert_eq!(row.2, exit, "{text}");
        }
        // Refused: unknown signal or action, uncatchable signals, an exit rule on a non-stop.
        for bad in [
            "KILL=ignore",
            "CHLD=ignore",
            "TERM=explode",
            "TERM",
            "HUP=reload:0",
            "TERM=graceful-stop:300",
        ] {
            assert!(bad.parse::<Override>().is_err(), "{bad}");
        }
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
