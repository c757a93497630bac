use std::path::PathBuf;

use clap::Parser;

use crate::settings::{Settings, StrOrInt};

/// The command line. Flag names are gunicorn's wherever gunicorn has the setting, so
/// a Procfile line written for gunicorn keeps working. No flag has a default here:
/// defaults live in [`Settings::defaults`], so that a config file or the environment
/// can set what the command line leaves out.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "ferricorn",
    version,
    about = "A prefork WSGI server with a documented signal and exit-status contract"
)]
pub struct Cli {
    /// The WSGI app: MODULE:CALLABLE, MODULE:factory(), MODULE:factory('arg', 2), or MODULE (meaning MODULE:application).
    #[arg(value_name = "APP_MODULE")]
    pub app: Option<String>,

    /// Config file (TOML; keys are gunicorn's setting names). Default: ./ferricorn.toml if it exists.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on: HOST:PORT, [IPV6]:PORT, HOST. Repeatable. Default 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set.
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS")]
    pub bind: Vec<String>,

    /// listen() backlog of each socket [default: 2048].
    #[arg(long, value_name = "INT")]
    pub backlog: Option<i32>,

    /// Number of worker processes [default: $WEB_CONCURRENCY, else 1].
    #[arg(short = 'w', long = "workers", value_name = "INT")]
    pub workers: Option<String>,

    /// Seconds a worker may spend in one request (or silent, or booting) before the master dumps its Python traceback and kills it; 0 turns it off [default: 30].
    #[arg(short = 't', long = "timeout", value_name = "SECONDS")]
    pub timeout: Option<u64>,

    /// Give up (exit 6) when workers keep dying before they are ready and none has become ready for this many seconds [default: 60].
    #[arg(long = "boot-deadline", value_name = "SECONDS")]
    pub boot_deadline: Option<u64>,

    /// Replace a worker after it served this many requests; 0: never [default: 0]. Its replacement starts first, so no request waits.
    #[arg(long = "max-requests", value_name = "INT")]
    pub max_requests: Option<u64>,

    /// Add a random 0..=N to --max-requests per worker, so workers are not replaced all at once [default: 0].
    #[arg(long = "max-requests-jitter", value_name = "INT")]
    pub max_requests_jitter: Option<u64>,

    /// Start from a named signal table: `ferricorn` (stops die by their signal) or `gunicorn` (every stop exits 0).
    #[arg(long = "signal-preset", value_name = "NAME")]
    pub signal_preset: Option<String>,

    /// Change what a signal does: SIGNAL=ACTION[:EXIT], e.g. `HUP=graceful-stop:0` or `USR2=ignore`. Repeatable. Actions: graceful-stop, quick-stop, reload, reopen-logs, add-worker, remove-worker, upgrade, ignore.
    #[arg(long = "on-signal", value_name = "SIG=ACTION[:EXIT]")]
    pub on_signal: Vec<String>,

    /// Seconds workers get to finish in-flight requests after a graceful stop before they are killed [default: 25].
    #[arg(long = "graceful-timeout", value_name = "SECONDS")]
    pub graceful_timeout: Option<f64>,

    /// Seconds an idle keep-alive connection is kept open [default: 100, above the 90 s that load balancers such as Heroku's router keep idle connections].
    #[arg(long = "keep-alive", value_name = "SECONDS")]
    pub keep_alive: Option<f64>,

    /// How the master exits after SIGTERM: `signal` (die by SIGTERM: a shell reads 143) or an exit code 0-255 (`0` is gunicorn's behaviour).
    #[arg(long = "term-exit", value_name = "signal|N")]
    pub term_exit: Option<String>,

    /// How the master exits after SIGINT: `signal` (130) or an exit code 0-255.
    #[arg(long = "int-exit", value_name = "signal|N")]
    pub int_exit: Option<String>,

    /// How the master exits after SIGQUIT: `signal` (131) or an exit code 0-255.
    #[arg(long = "quit-exit", value_name = "signal|N")]
    pub quit_exit: Option<String>,

    /// Change to this directory before loading the app (it is put first on sys.path).
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Comma-separated directories to put on sys.path before the app directory.
    #[arg(long, value_name = "DIRS")]
    pub pythonpath: Option<String>,

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

    /// Error log level: debug, info, warning, error, critical [default: info].
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
}

impl Cli {
    /// The settings this command line gives (only what it gives).
    pub fn settings(&self) -> Settings {
        Settings {
            wsgi_app: self.app.clone(),
            bind: (!self.bind.is_empty()).then(|| self.bind.clone()),
            backlog: self.backlog,
            workers: self.workers.clone().map(StrOrInt::Str),
            timeout: self.timeout,
            boot_deadline: self.boot_deadline,
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            signal_preset: self.signal_preset.clone(),
            on_signal: (!self.on_signal.is_empty()).then(|| self.on_signal.clone()),
            graceful_timeout: self.graceful_timeout,
            keepalive: self.keep_alive,
            term_exit: self.term_exit.clone().map(StrOrInt::Str),
            int_exit: self.int_exit.clone().map(StrOrInt::Str),
            quit_exit: self.quit_exit.clone().map(StrOrInt::Str),
            chdir: self.chdir.clone(),
            pythonpath: self.pythonpath.clone(),
            pidfile: self.pid.clone(),
            user: self.user.clone().map(StrOrInt::Str),
            group: self.group.clone().map(StrOrInt::Str),
            umask: self.umask.clone().map(StrOrInt::Str),
            loglevel: self.log_level.clone(),
        }
    }
}
