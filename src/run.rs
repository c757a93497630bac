//! The `ferricorn` command: parse the settings, bind, run the master, and say how
//! to exit. `lib.rs` hands it the process (and the interpreter it runs in), and
//! exits with what [`run`] returns: the exit status is the product.

use std::ffi::OsString;
use std::path::PathBuf;

use ferricorn_config::{Cli, Config, ProcessEnv};
use ferricorn_signals::{exit_code, Exit};
use ferricorn_wsgi::Interpreter;
use log::{error, info};

/// How this process was started, as the Python launcher saw it.
pub struct Host {
    /// The command line as typed (`args[0]` is the command).
    pub args: Vec<OsString>,
    /// What a USR2 upgrade executes: the `ferricorn` script (so a newly installed
    /// version is the one started), or `python -m ferricorn`; then its arguments.
    pub restart: (PathBuf, Vec<OsString>),
    pub interpreter: Interpreter,
}

pub fn run(host: &Host) -> Exit {
    // `ferricorn signals [OPTIONS]`: print the signal table those options give.
    let mut args = host.args.clone();
    let table_only = args.get(1).is_some_and(|a| a == "signals");
    if table_only {
        args.remove(1);
    }
    let cli = match parse_cli(&host.interpreter, args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() {
                exit_code::USAGE_ERROR
            } else {
                0
            };
            let _ = e.print();
            return Exit::Code(code);
        }
    };
    let (check, print) = (cli.check_config || cli.print_config, cli.print_config);
    let config = match Config::resolve(cli, &process_env(&host.interpreter)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return Exit::Code(exit_code::CONFIG_ERROR);
        }
    };
    if table_only {
        print!("{}", signal_table(&config.policy));
        return Exit::Code(0);
    }
    if config.app.is_empty() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let e = cmd.error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "the app to serve is missing: give MODULE:CALLABLE (e.g. `ferricorn app:app`) or `wsgi_app` in the config file",
        );
        let _ = e.print();
        return Exit::Code(exit_code::USAGE_ERROR);
    }
    // First: the files made from here on (the logs, the pidfile) get its mode.
    if let Some(mask) = config.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if let Some(path) = &config.error_log {
        if let Err(e) = ferricorn_log::redirect_stderr(path, file_owner(&config)) {
            eprintln!("Error: invalid value `{path}` for `errorlog` (from --error-logfile): {e}");
            return Exit::Code(exit_code::CONFIG_ERROR);
        }
    }
    // The access log is written by the workers; a path they cannot open is said
    // here, before anything is bound, not by every worker after.
    if let Some(path) = config.access_log.as_deref().filter(|p| *p != "-") {
        if let Err(e) = ferricorn_log::open_log_file(path, file_owner(&config)) {
            eprintln!("Error: invalid value `{path}` for `accesslog` (from --access-logfile): {e}");
            return Exit::Code(exit_code::CONFIG_ERROR);
        }
    }
    ferricorn_log::init(config.log_level);
    for w in &config.warnings {
        log::warn!("{w}");
    }
    if print {
        for (name, value, source) in &config.resolved {
            println!("{name} = {value}  # {source}");
        }
    }
    if check {
        // Nothing to hold signals for: a TERM ends a check as it would any command.
        let _ = ferricorn_signals::sys::set_mask(&nix::sys::signal::SigSet::empty());
        return Exit::Code(check_app(&config, &host.interpreter));
    }
    // Before the slow part of start-up (hooks, --preload, binding).
    let signals = match ferricorn_master::hold_signals(&config.policy) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install the signal handlers: {e}");
            return Exit::Code(exit_code::MASTER_FAILED);
        }
    };
    // systemd's NOTIFY_SOCKET and WATCHDOG_*: taken out of the environment before
    // anything else runs (hooks, the app); then -e KEY=VALUE. The master is
    // single-threaded here, and workers inherit what it leaves.
    let notify = ferricorn_master::Notifier::from_env();
    for (k, v) in &config.raw_env {
        std::env::set_var(k, v);
    }
    start_statsd(&config);
    serve(&config, signals, notify, host)
}

/// A start that ends before serving: logged, and told to systemd as the last status
/// (with the errno, when there is one), then the exit.
/// `--certfile`/`--keyfile`, loaded (one line naming the file on failure).
fn load_tls(config: &Config) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
    config
        .certfile
        .as_deref()
        .map(|c| ferricorn_worker::tls::load(c, config.keyfile.as_deref()))
        .transpose()
}

fn start_failed(
    notify: &mut ferricorn_master::Notifier,
    code: u8,
    message: &str,
    errno: Option<i32>,
) -> Exit {
    error!("{message}");
    notify.failed(&format!("Failed to start: {message}"), errno);
    Exit::Code(code)
}

/// `--statsd-host`: start sending (in the master, before any worker is forked:
/// they inherit the socket), or on a reload change or stop it for the workers
/// forked from then on. A host that does not resolve is said once; serving goes on.
fn start_statsd(config: &Config) {
    if let Err(e) = ferricorn_log::statsd::configure(config.statsd.as_ref()) {
        if let Some(s) = &config.statsd {
            log::warn!(
                "statsd: cannot send to {}: {e}; no statsd metrics are sent",
                s.target
            );
        }
    }
}

/// Who must be able to reopen the log files: the workers' user, when they switch.
fn file_owner(config: &Config) -> Option<(u32, u32)> {
    config.user.zip(config.group)
}

/// `--version`: which CPython ferricorn runs on, for bug reports.
fn version(interpreter: &Interpreter) -> String {
    format!(
        "{} on {}",
        env!("CARGO_PKG_VERSION"),
        interpreter.describe()
    )
}

fn parse_cli(interpreter: &Interpreter, args: Vec<OsString>) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let mut matches = Cli::command()
        .version(VERSION.get_or_init(|| version(interpreter)).as_str())
        .try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches)
}

/// CPython's fork protocol around each fork: every worker is a fork of the
/// interpreter this process runs in.
#[derive(Default)]
struct PythonFork(ferricorn_wsgi::ForkProtocol);

impl ferricorn_master::ForkHooks for PythonFork {
    fn before(&mut self) {
        self.0.before();
    }
    fn after_parent(&mut self) {
        self.0.after_parent();
    }
    fn after_child(&mut self) {
        self.0.after_child();
    }
}

/// gunicorn hooks that run in the master's moments (in a child Python).
const MASTER_HOOKS: [&str; 7] = [
    "nworkers_changed",
    "on_starting",
    "on_reload",
    "when_ready",
    "child_exit",
    "on_exit",
    "pre_exec",
];

/// gunicorn's hooks for the master's later moments: `child_exit`, `nworkers_changed`
/// and `pre_exec`, each in a child Python as the others.
struct HookEvents {
    python: PathBuf,
    hooks: (PathBuf, Vec<String>),
    /// What `server.num_workers` says.
    workers: u32,
}

impl ferricorn_master::MasterEvents for HookEvents {
    fn worker_exited(&mut self, pid: i32, worker_id: u32) {
        let extra = [pid.to_string(), worker_id.to_string()];
        run_master_hook(
            &self.python,
            Some(&self.hooks),
            self.workers,
            "child_exit",
            &extra,
        );
    }
    fn workers_changed(&mut self, new: u32, old: u32) {
        self.workers = new;
        let extra = [new.to_string(), old.to_string()];
        run_master_hook(
            &self.python,
            Some(&self.hooks),
            self.workers,
            "nworkers_changed",
            &extra,
        );
    }
    fn upgrading(&mut self) {
        run_master_hook(
            &self.python,
            Some(&self.hooks),
            self.workers,
            "pre_exec",
            &[],
        );
    }
}

/// Run a master hook of the gunicorn.conf.py, if it defines one, in a child Python
/// process (`python`, the interpreter ferricorn runs on): the master itself runs no
/// Python. Its output goes to the error log.
fn master_hook(python: &std::path::Path, config: &Config, name: &str) {
    run_master_hook(python, config.hooks.as_ref(), config.workers, name, &[]);
}

/// `master_hook` with what the hook is told besides the server: `extra` goes to
/// hooks.py's `run_master_hook` (a worker's pid and id for `child_exit`, the new and
/// old counts for `nworkers_changed`).
fn run_master_hook(
    python: &std::path::Path,
    hooks: Option<&(PathBuf, Vec<String>)>,
    workers: u32,
    name: &str,
    extra: &[String],
) {
    let Some((file, names)) = hooks else {
        return;
    };
    if !names.iter().any(|n| n == name) {
        return;
    }
    let script = format!("{}\nimport sys\nrun_master_hook(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:])\n", ferricorn_wsgi::HOOKS_PY);
    let status = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(file)
        .arg(name)
        .arg(std::process::id().to_string())
        .arg(workers.to_string())
        .args(extra)
        .stdin(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => error!("the {name} hook in {} failed ({s})", file.display()),
        Err(e) => error!("cannot run the {name} hook in {}: {e}", file.display()),
    }
}

/// The environment, with the Python a gunicorn.conf.py is read with: the one
/// ferricorn runs on, so its imports work as in the app.
fn process_env(interpreter: &Interpreter) -> ProcessEnv {
    ProcessEnv {
        python: Some(interpreter.executable.clone()),
    }
}

/// `--check-config`: the configuration is valid (or we would not be here); now
/// import the app as a worker would. This process exits right after, so the import
/// happens here rather than in a forked child.
fn check_app(config: &Config, interpreter: &Interpreter) -> u8 {
    if let Some(dir) = &config.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!("Error: invalid value `{}` for `chdir`: {e}", dir.display());
            return exit_code::CONFIG_ERROR;
        }
    }
    let app_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let options = ferricorn_wsgi::PythonOptions {
        app_dir,
        pythonpath: config.pythonpath.clone(),
    };
    if let Err(e) = check_environment(config, interpreter, &options) {
        error!("{e}");
        return exit_code::CONFIG_ERROR;
    }
    if let Err(e) = load_tls(config) {
        error!("{e}");
        return exit_code::CONFIG_ERROR;
    }
    ferricorn_wsgi::Python::attach(|py| {
        if let Err(e) = ferricorn_wsgi::set_sys_path(py, &options) {
            error!("Worker failed to boot: cannot set up sys.path: {e}");
            return exit_code::WORKER_BOOT_FAILED;
        }
        match ferricorn_wsgi::App::load(py, &config.app, config.workers > 1) {
            Ok(_) => {
                info!("Configuration and app `{}` are OK", config.app);
                0
            }
            Err(e) => {
                error!("App failed to load: {}", e.message);
                exit_code::APP_LOAD_FAILED
            }
        }
    })
}

/// The effective signal table as markdown (docs/signals.md embeds the default one;
/// tests/it/signals.rs checks that they agree).
fn signal_table(policy: &ferricorn_signals::Policy) -> String {
    let mut out =
        String::from("| signal | action | exit status (as a shell reads it) |\n|---|---|---|\n");
    for (signal, action, exit) in policy.rows() {
        let status = match exit {
            Some(Exit::Signal(s)) => format!(
                "{} (dies by {})",
                Exit::Signal(s).shell_status(),
                s.as_str()
            ),
            Some(Exit::Code(c)) => format!("{c} (exit code)"),
            None => "keeps running".to_string(),
        };
        out.push_str(&format!(
            "| {} | {} | {status} |\n",
            &signal.as_str()[3..],
            action.name()
        ));
    }
    out
}

/// What must hold of the environment before anything is bound: `VIRTUAL_ENV`, if
/// set, is the environment ferricorn runs in; with `--user`, that user can read
/// what the workers import from.
fn check_environment(
    config: &Config,
    interpreter: &Interpreter,
    options: &ferricorn_wsgi::PythonOptions,
) -> Result<(), ferricorn_wsgi::HostError> {
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        interpreter.check_virtual_env(std::path::Path::new(&venv))?;
    }
    if config.user.is_some() || config.group.is_some() {
        let uid = config
            .user
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        let gid = config
            .group
            .unwrap_or_else(|| nix::unistd::getegid().as_raw());
        let mut dirs = options.pythonpath.clone();
        dirs.push(options.app_dir.clone());
        dirs.extend(interpreter.path.iter().cloned());
        ferricorn_wsgi::check_readable_as(interpreter, uid, gid, &config.groups, &dirs)?;
    }
    Ok(())
}

fn serve(
    config: &Config,
    signals: ferricorn_signals::SelfPipe,
    mut notify: ferricorn_master::Notifier,
    host: &Host,
) -> Exit {
    let python = host.interpreter.executable.as_path();
    // Before --chdir: an upgrade re-executes from where the user started us.
    let start =
        ferricorn_master::StartInfo::capture(host.restart.0.clone(), host.restart.1.clone()).ok();
    let inherited = match ferricorn_master::take_inherited() {
        Ok(i) => i,
        Err(e) => {
            let message = format!("cannot take over the sockets of the previous binary: {e}");
            return start_failed(
                &mut notify,
                exit_code::BIND_FAILED,
                &message,
                e.raw_os_error(),
            );
        }
    };
    let activated = match ferricorn_master::take_activated() {
        Ok(a) => a,
        Err(e) => {
            let message = format!("cannot take the sockets systemd passed (LISTEN_FDS): {e}");
            return start_failed(
                &mut notify,
                exit_code::BIND_FAILED,
                &message,
                e.raw_os_error(),
            );
        }
    };
    // After taking the sockets: they are close-on-exec by now, so the hook's Python
    // does not hold a copy. As in gunicorn, nworkers_changed first learns the count
    // with no old one.
    run_master_hook(
        python,
        config.hooks.as_ref(),
        config.workers,
        "nworkers_changed",
        &[config.workers.to_string(), String::new()],
    );
    master_hook(python, config, "on_starting");
    if let Some(dir) = &config.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            let message = format!(
                "invalid value `{}` for `chdir` (from --chdir): {e}",
                dir.display()
            );
            return start_failed(
                &mut notify,
                exit_code::CONFIG_ERROR,
                &message,
                e.raw_os_error(),
            );
        }
    }
    let app_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let options = ferricorn_wsgi::PythonOptions {
        app_dir: app_dir.clone(),
        pythonpath: config.pythonpath.clone(),
    };
    if let Err(e) = check_environment(config, &host.interpreter, &options) {
        return start_failed(&mut notify, exit_code::CONFIG_ERROR, &e.to_string(), None);
    }
    // The certificate and key, read before anything is bound; workers inherit them.
    let tls = match load_tls(config) {
        Ok(tls) => tls,
        Err(e) => return start_failed(&mut notify, exit_code::CONFIG_ERROR, &e, None),
    };
    // --preload: import the app here, before binding and forking; a failure stops
    // the server with gunicorn's codes before any worker exists.
    let preloaded = if config.preload {
        match ferricorn_wsgi::preload(&options, &config.app, config.workers > 1) {
            Ok(app) => Some(app),
            Err(e) => {
                if let Some(detail) = &e.detail {
                    log::debug!("while loading {}:\n{}", config.app, detail.trim_end());
                }
                let message = format!("App failed to load: {}", e.message);
                return start_failed(&mut notify, exit_code::APP_LOAD_FAILED, &message, None);
            }
        }
    } else {
        None
    };
    // Before anything is bound: a pidfile of a running master refuses the start.
    let pidfile = match config
        .pidfile
        .as_deref()
        .map(|p| ferricorn_master::Pidfile::create(p, std::process::id()))
        .transpose()
    {
        Ok(Some((p, stale))) => {
            if let Some(pid) = stale {
                log::warn!(
                    "the pidfile named pid {pid}, which is not a ferricorn master: replaced"
                );
            }
            Some(p)
        }
        Ok(None) => None,
        Err(e) => {
            return start_failed(&mut notify, exit_code::CONFIG_ERROR, &e.to_string(), None);
        }
    };
    let (listeners, adopted) = match (inherited, activated) {
        // After an upgrade: the same sockets, still open, and the old workers; the
        // options this binary's configuration names apply to them from now on.
        (Some(mut i), _) => {
            let from_systemd = i.listeners.iter().any(|l| l.activated);
            ferricorn_master::claim_unix_files(&mut i.listeners, &config.binds);
            if !from_systemd && !ferricorn_master::match_binds(&i.listeners, &config.binds) {
                log::warn!("bind changed in the configuration; an upgrade keeps the current sockets (restart to listen elsewhere)");
            }
            if let Err(e) =
                ferricorn_master::apply_options(&i.listeners, config.backlog, config.defer_accept)
            {
                log::warn!("cannot give the listening sockets the configured backlog and deferred accepts: {e}");
            }
            (i.listeners, i.adopted)
        }
        (None, Some(listeners)) => {
            info!(
                "Using {} listening socket(s) from systemd (LISTEN_FDS); `bind` is not used, and backlog and deferred accepts are the socket unit's",
                listeners.len()
            );
            (listeners, Default::default())
        }
        (None, None) => {
            let opts = ferricorn_master::BindOptions {
                backlog: config.backlog,
                reuse_port: config.reuse_port,
                defer_accept: config.defer_accept,
                owner: file_owner(config),
            };
            match ferricorn_master::bind_all(&config.binds, opts) {
                Ok(l) => (l, Default::default()),
                Err(e) => {
                    if let Some(p) = &pidfile {
                        p.remove();
                    }
                    let errno = e.errno();
                    return start_failed(
                        &mut notify,
                        exit_code::BIND_FAILED,
                        &e.to_string(),
                        errno,
                    );
                }
            }
        }
    };
    // Removed when the server stops for good (an upgrade's exec never gets there).
    let made: Vec<ferricorn_master::Made> =
        listeners.iter().filter_map(|l| l.made.clone()).collect();
    let master_pid = std::process::id() as i32;
    info!("Starting ferricorn {}", env!("CARGO_PKG_VERSION"));
    for l in &listeners {
        // tests/it/util waits for this line to learn the port.
        // As gunicorn: https:// for the TCP binds TLS is served on.
        match (&l.addr, &tls) {
            (ferricorn_signals::ListenAddr::Tcp(a), Some(_)) => {
                info!("Listening at: https://{a} ({master_pid})")
            }
            (addr, _) => info!("Listening at: {addr} ({master_pid})"),
        }
    }
    info!(
        "Using worker: {}",
        if config.threads > 1 {
            "gthread"
        } else {
            "sync"
        }
    );
    master_hook(python, config, "when_ready");
    let start_dir = start
        .as_ref()
        .map(|s| s.cwd.clone())
        .unwrap_or_else(|| app_dir.clone());
    // `read_at_accept`: what the sockets do, not what the configuration asks (sockets
    // from systemd carry their unit's options), since reading a connection the kernel
    // handed over before its bytes came costs a read that finds nothing.
    let worker_options =
        |config: &Config, worker_id: u32, read_at_accept: bool| ferricorn_worker::WorkerOptions {
            app: config.app.clone(),
            app_dir: config
                .chdir
                .as_ref()
                .map_or_else(|| start_dir.clone(), |d| start_dir.join(d)),
            pythonpath: config.pythonpath.clone(),
            multiprocess: config.workers > 1,
            worker_id,
            settings: ferricorn_worker::Settings {
                keepalive: config.keepalive,
                header_timeout: config.header_timeout,
                body_timeout: config.body_timeout,
                max_connections: config.worker_connections,
                limits: ferricorn_worker::limits(
                    config.limit_request_line,
                    config.limit_request_fields,
                    config.limit_request_field_size,
                    config.limit_request_body,
                    config.permit_obsolete_folding,
                ),
                master_pid,
                trusted: config.forwarded_allow_ips.clone(),
                accept_batch: if config.threads > 1 {
                    1
                } else {
                    ferricorn_worker::ACCEPT_BATCH
                },
                proxy: config.proxy_protocol.clone(),
                body_buffer: config.body_buffer_size,
                read_at_accept,
                tls: tls.clone(),
            },
            max_requests: config.max_requests,
            max_requests_jitter: config.max_requests_jitter,
            orphan_limit: config.timeout.unwrap_or(config.graceful_timeout),
            user: config.user,
            group: config.group,
            groups: config.groups.clone(),
            access_log: config.access_log.clone(),
            access_log_format: config.access_log_format.clone(),
            error_log: config.error_log.clone(),
            hooks: config.hooks.clone().map(|(file, names)| {
                let worker_side = names
                    .into_iter()
                    .filter(|n| !MASTER_HOOKS.contains(&n.as_str()))
                    .collect();
                (file, worker_side)
            }),
            workers: config.workers,
            reload: config.reload,
            reload_extra_files: config.reload_extra_files.clone(),
            capture_output: config.capture_output,
            threads: config.threads,
            title: config
                .proc_name
                .as_ref()
                .map(|n| format!("ferricorn: worker [{n}]")),
            sendfile: config.sendfile,
        };
    let mut spawn = |config: &Config, child: ferricorn_master::ChildStart| {
        let defers = child.listeners.iter().all(ferricorn_master::defers_accepts);
        let opts = worker_options(config, child.worker_id, defers);
        ferricorn_worker::run(
            opts,
            child.listeners,
            child.status,
            child.scoreboard,
            child.slot,
            preloaded.as_ref(),
        )
    };
    // HUP: the same command line and environment, read again from the start directory
    // (where a relative -c path and ./ferricorn.toml are found).
    let mut reload = |in_force: &Config| -> Result<Config, String> {
        // As gunicorn runs it: first, with the configuration in force.
        master_hook(python, in_force, "on_reload");
        let here = std::env::current_dir().map_err(|e| e.to_string())?;
        std::env::set_current_dir(&start_dir).map_err(|e| e.to_string())?;
        let result = parse_cli(&host.interpreter, host.args.clone())
            .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())
            .and_then(|cli| {
                Config::resolve(cli, &process_env(&host.interpreter)).map_err(|e| e.to_string())
            })
            .inspect(start_statsd);
        std::env::set_current_dir(here).map_err(|e| e.to_string())?;
        result
    };
    if let Some(name) = &config.proc_name {
        // Last: everything that reads this process's own arguments has read them.
        ferricorn_signals::title::set_title(&format!("ferricorn: master [{name}]"));
    }
    let exit = ferricorn_master::run(
        config.clone(),
        signals,
        listeners,
        adopted,
        start,
        &mut reload,
        &mut spawn,
        ferricorn_master::Hooks {
            fork: Some(Box::new(PythonFork::default())),
            events: config.hooks.clone().map(|hooks| {
                Box::new(HookEvents {
                    python: python.to_path_buf(),
                    hooks,
                    workers: config.workers,
                }) as Box<dyn ferricorn_master::MasterEvents>
            }),
            notify,
        },
    );
    for m in &made {
        m.remove();
    }
    if let Some(p) = pidfile {
        p.remove();
    }
    master_hook(python, config, "on_exit");
    exit
}
