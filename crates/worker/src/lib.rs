//! A ferricorn sync worker: the process the master forks to serve requests.
//!
//! Boot order matters and is fixed: signal handlers first (the master left every
//! signal blocked and its own dispositions reset), then the mask is cleared, then
//! the forked interpreter is set up for the app and the app is imported, then the
//! worker reports ready and runs its event loop. Failures before ready are reported to the master with a reason
//! and gunicorn's exit codes (3: boot failed, 4: app failed to load).

mod access_log;
mod connection;
mod dispatch;
mod inbuf;
mod malloc;
mod orphan;
mod outbuf;
mod reloader;
mod responder;
mod sendfile;
mod server;
mod stream;
mod stream_body;
pub mod tls;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use ferricorn_signals::scoreboard::Scoreboard;
use ferricorn_signals::{exit_code, sys, Listening, Report, SelfPipe, Signal};
use ferricorn_wsgi::{App, Hooks, PythonOptions};
use log::{debug, error, warn};
use nix::sys::signal::SigSet;
pub use server::{Settings, ACCEPT_BATCH};

/// Everything a worker needs besides its sockets.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub app: String,
    pub app_dir: PathBuf,
    pub pythonpath: Vec<PathBuf>,
    /// More than one worker: `wsgi.multiprocess` is true.
    pub multiprocess: bool,
    pub worker_id: u32,
    pub settings: Settings,
    /// Ask to be replaced after this many requests (0: never), plus a random 0..=jitter.
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// Switch to these ids before the app is imported (`--user`, `--group`), with
    /// `groups` as the supplementary groups.
    pub user: Option<u32>,
    pub group: Option<u32>,
    pub groups: Vec<u32>,
    /// `--access-logfile` (`-` = stdout) and its format; `--error-logfile`.
    pub access_log: Option<String>,
    pub access_log_format: Option<String>,
    pub error_log: Option<String>,
    /// gunicorn.conf.py server hooks to run here, and the file defining them.
    pub hooks: Option<(PathBuf, Vec<String>)>,
    pub workers: u32,
    /// `--reload`: stop when a watched file changes; an app that fails to load
    /// serves its error instead of stopping the server.
    pub reload: bool,
    pub reload_extra_files: Vec<PathBuf>,
    /// `--capture-output`: the app's stdout goes where stderr goes.
    pub capture_output: bool,
    /// `--threads`: event loops (each with its own connections) in this worker.
    pub threads: u32,
    /// `--name`: the process title, set once Python has read the arguments.
    pub title: Option<String>,
    /// wsgi.file_wrapper responses may use sendfile(2).
    pub sendfile: bool,
    /// If the master dies, how long requests in flight may still run.
    pub orphan_limit: std::time::Duration,
}

/// Signals the worker records and handles in its loop (TERM), or records and
/// ignores (the master's own signals, which a process-group kill also delivers
/// here). Handled rather than SIG_IGN so that processes the app spawns start
/// with default dispositions.
const LOOP_SIGNALS: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGWINCH,
];
/// Quick stop: exit at once, even in the middle of a request.
const EXIT_NOW_SIGNALS: [Signal; 2] = [Signal::SIGINT, Signal::SIGQUIT];

/// Run a worker to completion; returns its exit code.
pub fn run(
    opts: WorkerOptions,
    listeners: Vec<Listening>,
    status: OwnedFd,
    board: Scoreboard,
    slot: usize,
    preloaded: Option<&App>,
) -> u8 {
    let status = std::fs::File::from(status);
    let board = std::sync::Arc::new(board);
    let mut status_for_boot = status.try_clone().ok();
    let mut report = move |r: Report| {
        if let Some(s) = status_for_boot.as_mut() {
            let _ = s.write_all(&r.encode());
        }
    };
    let signals = match install_signals() {
        Ok(s) => s,
        Err(e) => {
            report(Report::Failed {
                code: exit_code::WORKER_BOOT_FAILED,
                message: format!("Worker failed to boot: cannot install signal handlers: {e}"),
            });
            return exit_code::WORKER_BOOT_FAILED;
        }
    };
    // If the master dies without stopping us, stop gracefully rather than linger.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if nix::unistd::getppid().as_raw() != opts.settings.master_pid {
        return 0;
    }
    let copies: std::io::Result<Vec<_>> = listeners.iter().map(Listening::try_clone).collect();
    let watched = copies.and_then(|copies| {
        orphan::watch(
            nix::unistd::Pid::from_raw(opts.settings.master_pid),
            copies,
            opts.orphan_limit,
        )
    });
    if let Err(e) = watched {
        warn!(
            "cannot watch the master: if it dies, this worker keeps listening until it stops: {e}"
        );
    }

    malloc::keep_freed_heap();
    if let Err(e) = drop_privileges(opts.user, opts.group, &opts.groups) {
        report(Report::Failed {
            code: exit_code::WORKER_BOOT_FAILED,
            message: format!("Worker failed to boot: {e}"),
        });
        return exit_code::WORKER_BOOT_FAILED;
    }
    let python = PythonOptions {
        app_dir: opts.app_dir.clone(),
        pythonpath: opts.pythonpath.clone(),
    };
    // This process is a fork of the master's interpreter; with --preload the master
    // also put the app's directories on sys.path already.
    let started = ferricorn_wsgi::Python::attach(|py| {
        ferricorn_wsgi::prepare_worker(py, preloaded.is_none().then_some(&python))
    });
    if let Err(e) = started {
        report(Report::Failed {
            code: exit_code::WORKER_BOOT_FAILED,
            message: format!("Worker failed to boot: cannot set up Python: {e}"),
        });
        return exit_code::WORKER_BOOT_FAILED;
    }
    ferricorn_wsgi::Python::attach(|py| {
        let hooks = match &opts.hooks {
            None => None,
            Some((file, names)) => match Hooks::load(
                py,
                file,
                names,
                opts.worker_id,
                opts.settings.master_pid,
                opts.workers,
            ) {
                Ok(h) => Some(h),
                Err(e) => {
                    report(Report::Failed {
                        code: exit_code::WORKER_BOOT_FAILED,
                        message: format!(
                            "Worker failed to boot: cannot load the hooks in {}: {e}",
                            file.display()
                        ),
                    });
                    return exit_code::WORKER_BOOT_FAILED;
                }
            },
        };
        if let Some(h) = &hooks {
            h.post_fork(py);
        }
        let loaded = match preloaded {
            Some(app) => {
                ferricorn_wsgi::worker_after_preload(py);
                app.clone_ref(py).map_err(|e| ferricorn_wsgi::AppLoadError {
                    message: e.to_string(),
                    detail: None,
                })
            }
            None => App::load(py, &opts.app, opts.multiprocess),
        };
        let mut app = match loaded {
            Ok(app) => app,
            Err(e) if opts.reload => {
                // Development: keep the server up, show the error, wait for a fix.
                error!(
                    "App failed to load: {} (serving this error until a watched file changes)",
                    e.message
                );
                match App::error_page(
                    py,
                    &format!(
                        "App failed to load: {}\n\n{}",
                        e.message,
                        e.detail.as_deref().unwrap_or("")
                    ),
                ) {
                    Ok(app) => app,
                    Err(_) => return exit_code::APP_LOAD_FAILED,
                }
            }
            Err(e) => {
                if let Some(detail) = &e.detail {
                    debug!("while loading {}:\n{}", opts.app, detail.trim_end());
                }
                report(Report::Failed {
                    code: exit_code::APP_LOAD_FAILED,
                    message: format!("App failed to load: {}", e.message),
                });
                return exit_code::APP_LOAD_FAILED;
            }
        };
        app.set_sendfile(opts.sendfile);
        if let Some(h) = hooks {
            h.post_worker_init(py);
            app.set_hooks(py, h);
        }
        let reloader = opts
            .reload
            .then(|| reloader::Reloader::new(py, &opts.app_dir, &opts.reload_extra_files));
        if let Some(r) = &reloader {
            debug!("--reload: watching {} files", r.len());
        }
        let max_requests =
            (opts.max_requests > 0).then(|| opts.max_requests + jitter(opts.max_requests_jitter));
        let settings = opts.settings.clone();
        let format = opts
            .access_log_format
            .as_deref()
            .unwrap_or(access_log::DEFAULT_FORMAT);
        let access = match access_log::AccessLog::open(opts.access_log.as_deref(), format) {
            Ok(a) => a,
            Err(e) => {
                let path = opts.access_log.clone().unwrap_or_default();
                report(Report::Failed {
                    code: exit_code::WORKER_BOOT_FAILED,
                    message: format!(
                        "Worker failed to boot: cannot open the access log {path}: {e}"
                    ),
                });
                return exit_code::WORKER_BOOT_FAILED;
            }
        };
        let shared = std::sync::Arc::new(server::Shared::default());
        // --threads: more loops, each with its own connections, calling the app
        // under the GIL; a slow request on one does not hold up the others.
        let helpers = match start_helpers(
            py,
            &opts,
            &app,
            &listeners,
            &status,
            max_requests,
            &shared,
            (&board, slot),
        ) {
            Ok(h) => h,
            Err(e) => {
                report(Report::Failed {
                    code: exit_code::WORKER_BOOT_FAILED,
                    message: format!("Worker failed to boot: cannot start threads: {e}"),
                });
                return exit_code::WORKER_BOOT_FAILED;
            }
        };
        let role = server::Role {
            signals: Some(signals),
            board: Some((board, slot)),
            reloader,
            shared,
        };
        let parts = server::LoopParts {
            app,
            listeners,
            settings,
            status,
            max_requests,
            access,
            error_log: opts.error_log.clone(),
        };
        let mut server = match server::Server::new(py, parts, role) {
            Ok(s) => s,
            Err(e) => {
                report(Report::Failed {
                    code: exit_code::WORKER_BOOT_FAILED,
                    message: format!("Worker failed to boot: {e}"),
                });
                return exit_code::WORKER_BOOT_FAILED;
            }
        };
        if opts.capture_output {
            // After the access log took its own copy of stdout.
            if let Err(e) = nix::unistd::dup2_stdout(std::io::stderr()) {
                error!("--capture-output: cannot redirect stdout: {e}");
            }
        }
        if let Some(t) = &opts.title {
            ferricorn_signals::title::set_title(t);
        }
        report(Report::Ready);
        server.run();
        // The helpers stop with this loop (shared stop flag); wait for them without
        // holding the GIL they need to finish.
        py.detach(|| {
            for h in helpers {
                let _ = h.join();
            }
        });
        if let Some(h) = server.app().hooks() {
            h.worker_exit(py);
        }
        drop(server);
        run_exit_hooks(py);
        0
    })
}

/// `--group` then `--user` (in that order: after setuid the process may no longer
/// change its group). Supplementary groups are dropped with the user switch.
fn drop_privileges(user: Option<u32>, group: Option<u32>, groups: &[u32]) -> Result<(), String> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    if let Some(gid) = group {
        setgid(Gid::from_raw(gid)).map_err(|e| format!("cannot switch to group {gid}: {e}"))?;
    }
    if let Some(uid) = user {
        if Uid::effective().is_root() {
            // The user's own groups (initgroups, resolved by the master before the
            // fork), never the master's supplementary groups.
            let list: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
            setgroups(&list).map_err(|e| format!("cannot set the supplementary groups: {e}"))?;
        }
        setuid(Uid::from_raw(uid)).map_err(|e| format!("cannot switch to user {uid}: {e}"))?;
    }
    Ok(())
}

type Helper = std::thread::JoinHandle<()>;

/// Start `--threads` − 1 more loops on copies of the listening sockets.
#[allow(clippy::too_many_arguments)]
fn start_helpers(
    py: ferricorn_wsgi::Python<'_>,
    opts: &WorkerOptions,
    app: &App,
    listeners: &[Listening],
    status: &std::fs::File,
    max_requests: Option<u64>,
    shared: &std::sync::Arc<server::Shared>,
    (board, slot): (&std::sync::Arc<Scoreboard>, usize),
) -> std::io::Result<Vec<Helper>> {
    let extra = opts.threads.saturating_sub(1);
    if extra == 0 {
        return Ok(Vec::new());
    }
    app.set_multithread(py, true)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let format = opts
        .access_log_format
        .as_deref()
        .unwrap_or(access_log::DEFAULT_FORMAT)
        .to_string();
    let mut helpers = Vec::new();
    for n in 0..extra {
        let app = app
            .clone_ref(py)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        app.set_multithread(py, true)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let listeners: Vec<Listening> = listeners
            .iter()
            .map(Listening::try_clone)
            .collect::<Result<_, _>>()?;
        let status = status.try_clone()?;
        let access = access_log::AccessLog::open(opts.access_log.as_deref(), &format)?;
        let (settings, error_log, shared, board) = (
            opts.settings.clone(),
            opts.error_log.clone(),
            shared.clone(),
            board.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("loop-{}", n + 1))
            .spawn(move || {
                ferricorn_wsgi::Python::attach(|py| {
                    let role = server::Role {
                        signals: None,
                        board: Some((board, slot)),
                        reloader: None,
                        shared,
                    };
                    let parts = server::LoopParts {
                        app,
                        listeners,
                        settings,
                        status,
                        max_requests,
                        access,
                        error_log,
                    };
                    match server::Server::new(py, parts, role) {
                        Ok(mut s) => s.run(),
                        Err(e) => error!("worker thread failed to start: {e}"),
                    }
                })
            })?;
        helpers.push(handle);
    }
    Ok(helpers)
}

/// A random 0..=max, from the standard library's per-process random hash keys.
fn jitter(max: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if max == 0 {
        return 0;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() % (max + 1)
}

fn install_signals() -> std::io::Result<SelfPipe> {
    let signals = SelfPipe::install(&LOOP_SIGNALS)?;
    sys::install_exit_now(&EXIT_NOW_SIGNALS, 0)?;
    sys::reset_in_app_forks(&LOOP_SIGNALS)?;
    sys::reset_in_app_forks(&EXIT_NOW_SIGNALS)?;
    // Signals that arrived since the fork are delivered now, to these handlers.
    sys::set_mask(&SigSet::empty())?;
    Ok(signals)
}

/// The worker exits without finalising the interpreter; run what the app
/// registered with `atexit` and flush Python's streams, as a Python process would.
fn run_exit_hooks(py: ferricorn_wsgi::Python<'_>) {
    let result = py.run(
        c"import atexit, sys\natexit._run_exitfuncs()\nsys.stdout.flush()\nsys.stderr.flush()",
        None,
        None,
    );
    if let Err(e) = result {
        error!("error in atexit hooks: {e}");
    }
}

/// Request limits: gunicorn's three, the head buffer, and the largest body.
pub fn limits(
    request_line: usize,
    fields: usize,
    field_size: usize,
    max_body: u64,
    permit_obs_fold: bool,
) -> ferricorn_http::Limits {
    ferricorn_http::Limits {
        max_request_line: request_line,
        max_headers: fields,
        max_field_size: field_size,
        // Room for every field at its limit would be megabytes; 64 KiB is plenty
        // for real clients, unless the limits were raised past it.
        max_head: (64 * 1024).max(request_line + field_size * 2),
        max_body,
        permit_obs_fold,
    }
}
