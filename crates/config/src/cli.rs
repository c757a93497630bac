use std::path::PathBuf;

use clap::Parser;
use ferricorn_signals::{ExitRule, Override, Preset};

/// The command line. Flag names are gunicorn's wherever gunicorn has the setting, so
/// a Procfile line written for gunicorn keeps working.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ferricorn",
    version,
    about = "A prefork WSGI server with a documented signal and exit-status contract"
)]
pub struct Cli {
    /// The WSGI app: MODULE:CALLABLE, MODULE:factory(), MODULE:factory('arg', 2), or MODULE (meaning MODULE:application).
    #[arg(value_name = "APP_MODULE")]
    pub app: Option<String>,

    /// Address to listen on: HOST:PORT, [IPV6]:PORT, HOST. Repeatable. Default 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set.
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS")]
    pub bind: Vec<String>,

    /// listen() backlog of each socket.
    #[arg(long, default_value_t = 2048, value_name = "INT")]
    pub backlog: i32,

    /// Number of worker processes. Default $WEB_CONCURRENCY, else 1.
    #[arg(short = 'w', long = "workers", value_name = "INT")]
    pub workers: Option<String>,

    /// Seconds a worker may spend in one request (or silent, or booting) before the master dumps its Python traceback and kills it. 0 turns it off.
    #[arg(
        short = 't',
        long = "timeout",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub timeout: u64,

    /// Give up (exit 6) when workers keep dying before they are ready and none has become ready for this many seconds.
    #[arg(long = "boot-deadline", default_value_t = 60, value_name = "SECONDS")]
    pub boot_deadline: u64,

    /// Replace a worker after it served this many requests (0: never). Its replacement starts first, so no request waits.
    #[arg(long = "max-requests", default_value_t = 0, value_name = "INT")]
    pub max_requests: u64,

    /// Add a random 0..=N to --max-requests per worker, so workers are not replaced all at once.
    #[arg(long = "max-requests-jitter", default_value_t = 0, value_name = "INT")]
    pub max_requests_jitter: u64,

    /// Start from a named signal table: `ferricorn` (stops die by their signal) or `gunicorn` (every stop exits 0).
    #[arg(long = "signal-preset", value_name = "NAME", value_parser = parse_preset)]
    pub signal_preset: Option<Preset>,

    /// Change what a signal does: SIGNAL=ACTION[:EXIT], e.g. `HUP=graceful-stop:0` or `USR2=ignore`. Repeatable. Actions: graceful-stop, quick-stop, reload, reopen-logs, add-worker, remove-worker, upgrade, ignore.
    #[arg(long = "on-signal", value_name = "SIG=ACTION[:EXIT]", value_parser = parse_override)]
    pub on_signal: Vec<Override>,

    /// Seconds workers get to finish in-flight requests after a graceful stop before they are killed.
    #[arg(
        long = "graceful-timeout",
        default_value_t = 25.0,
        value_name = "SECONDS"
    )]
    pub graceful_timeout: f64,

    /// Seconds an idle keep-alive connection is kept open (above the 90 s that load balancers such as Heroku's router keep idle connections).
    #[arg(long = "keep-alive", default_value_t = 100.0, value_name = "SECONDS")]
    pub keep_alive: f64,

    /// How the master exits after SIGTERM: `signal` (die by SIGTERM: a shell reads 143) or an exit code 0-255 (`0` is gunicorn's behaviour).
    #[arg(long = "term-exit", value_name = "signal|N", value_parser = parse_exit_rule)]
    pub term_exit: Option<ExitRule>,

    /// How the master exits after SIGINT: `signal` (130) or an exit code 0-255.
    #[arg(long = "int-exit", value_name = "signal|N", value_parser = parse_exit_rule)]
    pub int_exit: Option<ExitRule>,

    /// How the master exits after SIGQUIT: `signal` (131) or an exit code 0-255.
    #[arg(long = "quit-exit", value_name = "signal|N", value_parser = parse_exit_rule)]
    pub quit_exit: Option<ExitRule>,

    /// Change to this directory before loading the app (it is put first on sys.path).
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Comma-separated directories to put on sys.path before the app directory.
    #[arg(long, value_name = "DIRS")]
    pub pythonpath: Vec<String>,

    /// Write the master's pid to this file (atomically), and remove it at exit.
    #[arg(short = 'p', long = "pid", value_name = "FILE")]
    pub pid: Option<PathBuf>,

    /// Run workers as this user (name or uid); the master keeps its own.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,

    /// Run workers as this group (name or gid).
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,

    /// File mode creation mask, e.g. 0o027, 027 (octal) or 23 (decimal).
    #[arg(short = 'm', long = "umask", value_name = "INT")]
    pub umask: Option<String>,

    /// Error log level: debug, info, warning, error, critical.
    #[arg(long = "log-level", default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
}

fn parse_preset(s: &str) -> Result<Preset, String> {
    s.parse()
}

fn parse_override(s: &str) -> Result<Override, String> {
    s.parse()
}

fn parse_exit_rule(s: &str) -> Result<ExitRule, String> {
    s.parse::<ExitRule>().map_err(|e| e.to_string())
}
