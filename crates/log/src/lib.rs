//! A tiny logger for the `log` facade that writes gunicorn-shaped lines to stderr:
//! `[2026-11-26 12:00:00 +0000] [1234] [INFO] message`.
//!
//! Fork-safe by construction: no background thread, no buffer and no lock of its
//! own; each record is formatted into a local string and written with one
//! `write(2)`, so a child never inherits a half-written line or a held mutex.
//!
//! With `--statsd-host`, each warning and error line is also counted, as
//! gunicorn's statsd logger counts them (`gunicorn.log.warning`, …; see
//! [`statsd`]), whether or not `--log-level` shows it.

pub mod statsd;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

/// The most verbose level shown (a `LevelFilter` as its number).
static SHOWN: AtomicUsize = AtomicUsize::new(LevelFilter::Info as usize);

/// The log target of an error line that gunicorn logs with `log.critical`
/// (`WORKER TIMEOUT`): counted as `gunicorn.log.critical`, shown as `[ERROR]`.
pub const CRITICAL: &str = "ferricorn::critical";
/// The log target of an error line that gunicorn logs with `log.exception` (an
/// app's traceback): counted as `gunicorn.log.exception`, shown as `[ERROR]`.
pub const EXCEPTION: &str = "ferricorn::exception";

/// Install the logger; `level` is the most verbose level shown.
pub fn init(level: LevelFilter) {
    // A second init (tests, or a re-exec'd process) keeps the first logger.
    let _ = log::set_logger(&LOGGER);
    set_level(level);
}

/// Show lines from `level` up (at start, and on a reload). Warnings and errors
/// always reach the logger, which counts them for statsd before filtering.
pub fn set_level(level: LevelFilter) {
    SHOWN.store(level as usize, Ordering::Relaxed);
    log::set_max_level(level.max(LevelFilter::Warn));
}

/// `--error-logfile PATH`: make this process's stderr (fd 2) append to `path`, so
/// ferricorn's log, Python tracebacks and whatever the app prints to stderr all
/// land there. Called again on USR1 to follow a rotated file.
/// `owner`: the workers' user and group (`--user`), who must be able to reopen it.
pub fn redirect_stderr(path: &str, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let file = open_log_file(path, owner)?;
    nix::unistd::dup2_stderr(&file)?;
    Ok(())
}

/// Open (creating) a log file to append to. With `owner` (the workers' user and
/// group, when they run as another user), a master running as root hands the file
/// to them, as gunicorn does: workers write it, and reopen it after a rotation.
pub fn open_log_file(path: &str, owner: Option<(u32, u32)>) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if let Some((uid, gid)) = owner {
        if nix::unistd::geteuid().is_root() {
            nix::unistd::fchown(
                &file,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )?;
        }
    }
    Ok(file)
}

/// Parse gunicorn's level names (`debug`, `info`, `warning`, `error`, `critical`).
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    Some(match s.to_ascii_lowercase().as_str() {
        "debug" => LevelFilter::Debug,
        "info" => LevelFilter::Info,
        "warning" | "warn" => LevelFilter::Warn,
        "error" | "critical" => LevelFilter::Error,
        _ => return None,
    })
}

/// The local time as log lines give it (`2026-11-26 14:03:07 +0100`).
pub fn local_time() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S %z")
        .to_string()
}

/// One formatted line, as the logger writes it (without the newline).
pub fn format_line(level: Level, pid: u32, message: &std::fmt::Arguments<'_>) -> String {
    let name = match level {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug | Level::Trace => "DEBUG",
    };
    format!("[{}] [{pid}] [{name}] {message}", local_time())
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() as usize <= SHOWN.load(Ordering::Relaxed)
    }

    fn log(&self, record: &Record<'_>) {
        match (record.level(), record.target()) {
            (Level::Warn, _) => statsd::log_line("warning"),
            (Level::Error, CRITICAL) => statsd::log_line("critical"),
            (Level::Error, EXCEPTION) => statsd::log_line("exception"),
            (Level::Error, _) => statsd::log_line("error"),
            _ => {}
        }
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = format_line(record.level(), std::process::id(), record.args());
        line.push('\n');
        // Errors writing the log have nowhere better to go.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shape_matches_gunicorn() {
        let line = format_line(Level::Warn, 42, &format_args!("hello {}", 1));
        // [YYYY-mm-dd HH:MM:SS +zzzz] [pid] [LEVEL] message
        let b = line.as_bytes();
        assert_eq!(b[0], b'[');
        assert!(matches!(b[21], b'+' | b'-'), "{line}");
        assert!(line.ends_with("] [42] [WARNING] hello 1"), "{line}");
        assert_eq!(line.find(']'), Some(26), "{line}");
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level("WARNING"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("critical"), Some(LevelFilter::Error));
        assert_eq!(parse_level("bogus"), None);
    }
}
