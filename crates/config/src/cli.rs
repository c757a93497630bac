use std::path::PathBuf;

use clap::Parser;

use crate::settings::{Settings, StrOrInt, StrOrList};

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

    /// Seconds a graceful stop keeps accepting and serving (with `Connection: close`) before it begins, while a load balancer such as Kubernetes' takes the server out [default: 0].
    #[arg(long = "drain-delay", value_name = "SECONDS")]
    pub drain_delay: Option<f64>,

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

    /// Serve TLS on every TCP bind with this PEM certificate chain (the key may be in it too).
    #[arg(long = "certfile", value_name = "FILE")]
    pub certfile: Option<PathBuf>,

    /// The PEM private key (RSA, ECDSA or Ed25519) for --certfile (default: the key in the certfile).
    #[arg(long = "keyfile", value_name = "FILE")]
    pub keyfile: Option<PathBuf>,

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

    /// Access log: `-` for stdout, or a file to append to. Off unless given.
    #[arg(long = "access-logfile", value_name = "FILE")]
    pub access_logfile: Option<String>,

    /// Send gunicorn's statsd metrics (requests, status codes, durations, workers, log lines) to HOST:PORT over UDP, or to unix://PATH (a unix datagram socket). Off unless given.
    #[arg(long = "statsd-host", value_name = "STATSD_ADDR")]
    pub statsd_host: Option<String>,

    /// Prefix of every statsd metric name; a trailing `.` is added if missing, as gunicorn does.
    #[arg(long = "statsd-prefix", value_name = "PREFIX")]
    pub statsd_prefix: Option<String>,

    /// Datadog (dogstatsd) tags appended to every statsd metric, comma-separated: `env:prod,service:web`.
    #[arg(long = "dogstatsd-tags", value_name = "TAGS")]
    pub dogstatsd_tags: Option<String>,

    /// Access log line format, with gunicorn's atoms (h l u t r m U q H s B b f a T M D L p, %({header}i)s, %({header}o)s, %({var}e)s).
    #[arg(long = "access-logformat", value_name = "FORMAT")]
    pub access_logformat: Option<String>,

    /// Error log: `-` for stderr (default), or a file to append to (the app's stderr goes there too).
    #[arg(long = "error-logfile", alias = "log-file", value_name = "FILE")]
    pub error_logfile: Option<String>,

    /// Peers trusted to say the original scheme with X-Forwarded-Proto / -Ssl / -Protocol: `*`, or a comma list of IPs and CIDRs [default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1].
    #[arg(long = "forwarded-allow-ips", value_name = "IPS")]
    pub forwarded_allow_ips: Option<String>,

    /// Accept a PROXY protocol header (v1 or v2) from --proxy-allow-from peers: REMOTE_ADDR/PORT become the client's. `off`, `v1`, `v2`, `auto` (the bare flag: either).
    #[arg(long = "proxy-protocol", num_args = 0..=1, default_missing_value = "auto", value_name = "MODE")]
    pub proxy_protocol: Option<String>,

    /// Peers allowed to send a PROXY header (others get 403): `*`, or IPs and CIDRs [default: 127.0.0.1,::1].
    #[arg(long = "proxy-allow-from", value_name = "IPS")]
    pub proxy_allow_from: Option<String>,

    /// Serve Prometheus metrics (/metrics) and the /livez and /readyz probes from the master on this HOST:PORT [default: off].
    #[arg(long = "metrics-bind", value_name = "ADDRESS")]
    pub metrics_bind: Option<String>,

    /// Do not use sendfile(2) for wsgi.file_wrapper responses (default: use it, unless SENDFILE says otherwise).
    #[arg(long = "no-sendfile")]
    pub no_sendfile: bool,

    /// Process title base: `ps` shows `ferricorn: master [NAME]` and `ferricorn: worker [NAME]`.
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: Option<String>,

    /// Set SO_REUSEPORT on the listening sockets, so another server (a new deploy) can bind the same port alongside.
    #[arg(long = "reuse-port")]
    pub reuse_port: bool,

    /// Hand a worker each connection at once, not when its first bytes arrive (default: TCP_DEFER_ACCEPT on the listening sockets).
    #[arg(long = "no-defer-accept")]
    pub no_defer_accept: bool,

    /// Requests one worker serves concurrently: that many event loops (threads), each with its own connections, calling the app under the GIL [default: 1].
    #[arg(long = "threads", value_name = "INT")]
    pub threads: Option<u32>,

    /// Import the app in the master before forking workers: they share its memory (copy-on-write), and import-time work runs once. HUP then does not reload code.
    #[arg(long = "preload")]
    pub preload: bool,

    /// Development: restart workers when a loaded Python file (or --reload-extra-file) changes; an app that fails to load then serves its error until fixed.
    #[arg(long = "reload")]
    pub reload: bool,

    /// With --reload, also watch this file. Repeatable.
    #[arg(long = "reload-extra-file", value_name = "FILE")]
    pub reload_extra_file: Vec<String>,

    /// Send the app's stdout to the error log too (it goes to stderr's destination).
    #[arg(long = "capture-output")]
    pub capture_output: bool,

    /// Seconds a client gets to send a whole request head, from its first byte (trickling does not extend it) [default: 30].
    #[arg(long = "header-timeout", value_name = "SECONDS")]
    pub header_timeout: Option<f64>,

    /// Seconds a client may stall while sending a body, or while a response waits for it to read [default: 30].
    #[arg(long = "body-timeout", value_name = "SECONDS")]
    pub body_timeout: Option<f64>,

    /// Largest request body in bytes (413 above it) [default: 104857600].
    #[arg(long = "limit-request-body", value_name = "BYTES")]
    pub limit_request_body: Option<u64>,

    /// Accept obs-fold (a header field continued on the next line after a space or tab) instead of answering 400, as gunicorn's option.
    #[arg(long = "permit-obsolete-folding")]
    pub permit_obsolete_folding: bool,

    /// Bodies up to this many bytes are received before the app runs; larger ones stream to it as it reads wsgi.input [default: 1048576].
    #[arg(long = "body-buffer-size", value_name = "BYTES")]
    pub body_buffer_size: Option<u64>,

    /// Most connections one worker holds open at once [default: 1000].
    #[arg(long = "worker-connections", value_name = "INT")]
    pub worker_connections: Option<u64>,

    /// Longest request line in bytes (414 above it); 0 means 8190, values above 8190 are clamped to it [default: 4094].
    #[arg(long = "limit-request-line", value_name = "INT")]
    pub limit_request_line: Option<u64>,

    /// Most header fields in a request (431 above it); 0 or above 32768 means 32768 [default: 100].
    #[arg(long = "limit-request-fields", value_name = "INT")]
    pub limit_request_fields: Option<u64>,

    /// Longest header field line in bytes, CRLF included (431 above it); 0 means 8190 [default: 8190]. Spelled as gunicorn spells it.
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        value_name = "INT"
    )]
    pub limit_request_field_size: Option<u64>,

    /// Load the configuration and import the app, then exit: 0 if both work, 1 for a bad setting, 4 if the app does not load.
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Print every resolved setting and where its value came from, then check as --check-config does.
    #[arg(long = "print-config")]
    pub print_config: bool,

    /// Set an environment variable for the master and workers (KEY=VALUE). Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    #[command(flatten)]
    pub gunicorn: GunicornCompat,
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
            drain_delay: self.drain_delay,
            keepalive: self.keep_alive,
            term_exit: self.term_exit.clone().map(StrOrInt::Str),
            int_exit: self.int_exit.clone().map(StrOrInt::Str),
            quit_exit: self.quit_exit.clone().map(StrOrInt::Str),
            chdir: self.chdir.clone(),
            pythonpath: self.pythonpath.clone(),
            pidfile: self.pid.clone(),
            certfile: self.certfile.clone(),
            keyfile: self.keyfile.clone(),
            user: self.user.clone().map(StrOrInt::Str),
            group: self.group.clone().map(StrOrInt::Str),
            umask: self.umask.clone().map(StrOrInt::Str),
            loglevel: self.log_level.clone(),
            worker_connections: self.worker_connections,
            accesslog: self.access_logfile.clone(),
            access_log_format: self.access_logformat.clone(),
            statsd_host: self.statsd_host.clone(),
            statsd_prefix: self.statsd_prefix.clone(),
            dogstatsd_tags: self.dogstatsd_tags.clone(),
            errorlog: self.error_logfile.clone(),
            raw_env: (!self.env.is_empty()).then(|| self.env.clone()),
            forwarded_allow_ips: self.forwarded_allow_ips.clone().map(StrOrList::Str),
            reload: self.reload.then_some(true),
            reload_extra_files: (!self.reload_extra_file.is_empty())
                .then(|| self.reload_extra_file.clone()),
            capture_output: self.capture_output.then_some(true),
            preload_app: self.preload.then_some(true),
            threads: self.threads,
            proc_name: self.name.clone(),
            sendfile: self.no_sendfile.then_some(false),
            reuse_port: self.reuse_port.then_some(true),
            defer_accept: self.no_defer_accept.then_some(false),
            proxy_protocol: self.proxy_protocol.clone().map(StrOrList::Str),
            proxy_allow_ips: self.proxy_allow_from.clone().map(StrOrList::Str),
            metrics_bind: self.metrics_bind.clone(),
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            limit_request_body: self.limit_request_body,
            body_buffer_size: self.body_buffer_size,
            permit_obsolete_folding: self.permit_obsolete_folding.then_some(true),
            limit_request_line: self.limit_request_line,
            limit_request_fields: self.limit_request_fields,
            limit_request_field_size: self.limit_request_field_size,
        }
    }
}

/// gunicorn flags ferricorn does not implement, and what it does about each: a
/// flag whose absence changes nothing an app can see is accepted with a warning;
/// one whose absence would change how the app behaves is refused.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GunicornCompat {
    #[arg(short = 'D', long = "daemon", hide = true)]
    pub daemon: bool,
    #[arg(long = "paste", alias = "paster", hide = true, value_name = "FILE")]
    pub paste: Option<String>,
    #[arg(long = "ca-certs", hide = true, value_name = "FILE")]
    pub ca_certs: Option<String>,
    #[arg(long = "reload-engine", hide = true, value_name = "ENGINE")]
    pub reload_engine: Option<String>,
    #[arg(long = "worker-tmp-dir", hide = true, value_name = "DIR")]
    pub worker_tmp_dir: Option<String>,
    #[arg(long = "initgroups", hide = true)]
    pub initgroups: bool,
    #[arg(long = "log-syslog", hide = true)]
    pub log_syslog: bool,
    #[arg(long = "log-syslog-to", hide = true, value_name = "ADDR")]
    pub log_syslog_to: Option<String>,
    #[arg(long = "log-syslog-prefix", hide = true, value_name = "PREFIX")]
    pub log_syslog_prefix: Option<String>,
    #[arg(long = "log-syslog-facility", hide = true, value_name = "FACILITY")]
    pub log_syslog_facility: Option<String>,
    #[arg(long = "log-config", hide = true, value_name = "FILE")]
    pub log_config: Option<String>,
    #[arg(long = "log-config-json", hide = true, value_name = "FILE")]
    pub log_config_json: Option<String>,
    #[arg(long = "logger-class", hide = true, value_name = "CLASS")]
    pub logger_class: Option<String>,
    #[arg(short = 'R', long = "enable-stdio-inheritance", hide = true)]
    pub enable_stdio_inheritance: bool,
    #[arg(long = "spew", hide = true)]
    pub spew: bool,
    #[arg(long = "no-control-socket", hide = true)]
    pub no_control_socket: bool,
    #[arg(long = "control-socket", hide = true, value_name = "PATH")]
    pub control_socket: Option<String>,
    #[arg(long = "strip-header-spaces", hide = true)]
    pub strip_header_spaces: bool,
    #[arg(long = "permit-unconventional-http-method", hide = true)]
    pub permit_unconventional_http_method: bool,
    #[arg(long = "permit-unconventional-http-version", hide = true)]
    pub permit_unconventional_http_version: bool,
    #[arg(long = "casefold-http-method", hide = true)]
    pub casefold_http_method: bool,
    #[arg(short = 'k', long = "worker-class", hide = true, value_name = "CLASS")]
    pub worker_class: Option<String>,
}

impl GunicornCompat {
    /// Warnings for flags that are accepted and ignored; an error for the first
    /// flag that cannot be ignored without changing how the app behaves.
    pub fn check(&self, source: &str) -> Result<Vec<String>, (String, String, String)> {
        let refuse = |flag: &str, value: &str, why: &str| {
            Err((flag.to_string(), value.to_string(), why.to_string()))
        };
        if self.daemon {
            return refuse("--daemon", "true", "ferricorn stays in the foreground; let the supervisor (systemd, Docker, Heroku) run it in the background");
        }
        if let Some(p) = &self.paste {
            return refuse(
                "--paste",
                p,
                "PasteDeploy apps are not supported; name the WSGI callable (MODULE:CALLABLE)",
            );
        }
        if let Some(v) = &self.ca_certs {
            return refuse("--ca-certs", v, "client certificates are not supported yet; put a TLS proxy (nginx, a load balancer) in front to require them");
        }
        if let Some(k) = &self.worker_class {
            if k != "sync" && k != "gthread" {
                return refuse("--worker-class", k, "ferricorn has sync and gthread workers (event-driven connections; --threads N for N concurrent requests per worker); use -k sync or -k gthread");
            }
        }
        let mut warnings = Vec::new();
        let mut ignored = |flag: &str, why: &str| {
            warnings.push(format!("{flag} (from {source}) is ignored: {why}"))
        };
        if self.reload_engine.is_some() {
            ignored("--reload-engine", "--reload polls file modification times");
        }
        if self.worker_tmp_dir.is_some() {
            ignored(
                "--worker-tmp-dir",
                "worker heartbeats use shared memory, not files",
            );
        }
        if self.initgroups {
            ignored("--initgroups", "workers keep only the --group group");
        }
        if self.log_syslog
            || self.log_syslog_to.is_some()
            || self.log_syslog_prefix.is_some()
            || self.log_syslog_facility.is_some()
        {
            ignored(
                "--log-syslog",
                "logs go to stderr (and the access log where --access-logfile says)",
            );
        }
        if self.log_config.is_some()
            || self.log_config_json.is_some()
            || self.logger_class.is_some()
        {
            ignored(
                "--log-config",
                "Python logging configuration does not apply to ferricorn's own log",
            );
        }
        if self.enable_stdio_inheritance
            || self.spew
            || self.no_control_socket
            || self.control_socket.is_some()
        {
            ignored(
                "--enable-stdio-inheritance/--spew/--control-socket",
                "not applicable to ferricorn",
            );
        }
        if self.strip_header_spaces
            || self.permit_unconventional_http_method
            || self.permit_unconventional_http_version
            || self.casefold_http_method
        {
            ignored(
                "--permit-unconventional-*/--strip-header-spaces/--casefold-http-method",
                "ferricorn's HTTP parser stays strict (RFC 9112)",
            );
        }
        if self.worker_class.is_some() {
            ignored("--worker-class", "the worker type follows --threads (1: sync, more: gthread), as gunicorn switches sync to gthread when --threads > 1");
        }
        Ok(warnings)
    }
}
