//! Start the real `ferricorn` command and talk to it the way a user would.
//!
//! Every server is started in its own process group on 127.0.0.1 port 0, is
//! waited for by reading its log (never by sleeping), and is killed with its
//! whole group when the handle drops.

pub mod http;
pub mod load;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// The `ferricorn` command under test: the one installed into a venv, as a user
/// runs it (`FERRICORN_BIN`; scripts/test builds the wheel and installs it into
/// `.venv`, whose `bin/ferricorn` is the default).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let path = std::env::var_os("FERRICORN_BIN")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| test_venv().join("bin/ferricorn"));
        assert!(
            path.exists(),
            "no ferricorn at {}: run ./scripts/test (it builds and installs the wheel), or set FERRICORN_BIN",
            path.display()
        );
        path.to_string_lossy().into_owned()
    })
}
/// How long a server gets to boot in tests (generous: CI machines are slow).
pub const BOOT: Duration = Duration::from_secs(20);

pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

static CPU_HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held by tests that saturate the machine (wrk) and by tests whose assertions
/// include a time bound (comparisons, slow clients), so that one never runs while
/// the other does: on 2 cores, a wrk run beside a timing check makes it flaky.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    CPU_HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh, empty directory for one test's files, under cargo's test tmp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test scratch directory");
    dir
}

/// The pid a worker reports on `/pid` (tests/apps/basic.py).
pub fn worker_pid(addr: SocketAddr) -> i32 {
    http::get(addr, "/pid")
        .expect("GET /pid")
        .text()
        .parse()
        .expect("a pid")
}

/// The venv scripts/test makes (`FERRICORN_TEST_VENV`, else `<repo>/.venv`):
/// gunicorn, waitress, Flask, Django and honcho for the tests that need them.
pub fn test_venv() -> PathBuf {
    std::env::var_os("FERRICORN_TEST_VENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join(".venv"))
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Lines a process wrote, shared with the thread that reads them.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn collect(self: &Arc<Self>, stream: impl std::io::Read + Send + 'static) {
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                me.lines.lock().unwrap().0.push(line);
                me.changed.notify_all();
            }
            me.lines.lock().unwrap().1 = true;
            me.changed.notify_all();
        });
    }

    /// Wait until `count` lines satisfy `pred`; returns the last one matched.
    fn wait_for(
        &self,
        pred: &dyn Fn(&str) -> bool,
        count: usize,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap();
        loop {
            let matched: Vec<&String> = guard.0.iter().filter(|l| pred(l)).collect();
            if matched.len() >= count {
                return matched.get(count - 1).map(|s| s.to_string());
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None;
            }
            guard = self.changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Wait until the writer side closed (every process holding the pipe exited).
    fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap();
        while !guard.1 && Instant::now() < deadline {
            guard = self
                .changed
                .wait_timeout(guard, deadline - Instant::now())
                .unwrap()
                .0;
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().0.join("\n")
    }
}

pub struct ServerBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    env_clear: bool,
    default_bind: bool,
    workers: usize,
    workers_flag: bool,
    chdir: PathBuf,
    wrapper: Vec<String>,
    allow_core_dumps: bool,
    fd_3: Option<std::os::fd::RawFd>,
    program: PathBuf,
    prefix_args: Vec<String>,
    cwd: Option<PathBuf>,
}

impl ServerBuilder {
    pub fn new(app: &str) -> ServerBuilder {
        ServerBuilder {
            args: vec![app.to_string()],
            envs: Vec::new(),
            env_clear: false,
            default_bind: true,
            workers: 1,
            workers_flag: true,
            chdir: apps_dir(),
            wrapper: Vec::new(),
            allow_core_dumps: false,
            fd_3: None,
            program: PathBuf::from(bin()),
            prefix_args: Vec::new(),
            cwd: None,
        }
    }

    /// Exactly `program args…`, as a deployment file writes it: no `--chdir`, `-w` or
    /// `-b` added (one worker to wait for, the default).
    pub fn command(program: &Path, args: &[String]) -> ServerBuilder {
        let mut b = ServerBuilder::new("")
            .program(program)
            .no_chdir()
            .no_default_bind()
            .no_workers_flag();
        b.args = args.to_vec();
        b
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.to_string(), v.to_string()));
        self
    }

    /// Start from an empty environment (then add with `env`).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Do not add `-b 127.0.0.1:0` (the test binds itself, or tests PORT).
    pub fn no_default_bind(mut self) -> Self {
        self.default_bind = false;
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Do not pass `-w` (the test sets WEB_CONCURRENCY); `workers` still says how
    /// many ready workers to wait for.
    pub fn no_workers_flag(mut self) -> Self {
        self.workers_flag = false;
        self
    }

    /// Start in this directory (where ./ferricorn.toml is looked for).
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Do not pass `--chdir` (the config file gives it, or the test wants the default).
    pub fn no_chdir(mut self) -> Self {
        self.chdir = PathBuf::new();
        self
    }

    /// Start this binary instead of the one cargo built (a copy, for upgrade tests).
    pub fn program(mut self, path: &Path) -> Self {
        self.program = path.to_path_buf();
        self
    }

    /// Arguments that come first, before ferricorn's own (`-m ferricorn` when the
    /// program is the venv's python).
    pub fn prefix_args(mut self, a: &[&str]) -> Self {
        self.prefix_args = a.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Run the binary under another command, e.g. `unshare --pid --fork`.
    pub fn wrapped_in(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Give the process `fd` (open in this test process) as its fd 3, where
    /// systemd puts the first socket it passes.
    pub fn fd_3(mut self, fd: std::os::fd::RawFd) -> Self {
        self.fd_3 = Some(fd);
        self
    }

    /// Start with an unlimited core-file size, so a test can see whether the
    /// process would dump core.
    pub fn allow_core_dumps(mut self) -> Self {
        self.allow_core_dumps = true;
        self
    }

    /// Serve an app from this directory instead of tests/apps.
    pub fn chdir(mut self, dir: &Path) -> Self {
        self.chdir = dir.to_path_buf();
        self
    }

    /// Start the process without waiting for it to be ready.
    pub fn spawn(self) -> Server {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.prefix_args);
        if !self.chdir.as_os_str().is_empty() {
            cmd.arg("--chdir").arg(&self.chdir);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        if self.workers_flag {
            cmd.args(["-w", &self.workers.to_string()]);
        }
        if self.default_bind {
            cmd.args(["-b", "127.0.0.1:0"]);
        }
        cmd.args(&self.args);
        if self.env_clear {
            cmd.env_clear();
        }
        // A developer's shell must not change what the tests see.
        cmd.env_remove("PORT")
            .env_remove("WEB_CONCURRENCY")
            .env_remove("VIRTUAL_ENV");
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: tests can signal the group as Heroku and systemd
        // do, and Drop can kill everything the server started.
        cmd.process_group(0);
        if self.allow_core_dumps {
            // SAFETY: setrlimit is async-signal-safe and touches no shared state.
            unsafe {
                cmd.pre_exec(|| {
                    let inf = nix::sys::resource::RLIM_INFINITY;
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_CORE,
                        inf,
                        inf,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        }
        if let Some(fd) = self.fd_3 {
            // SAFETY: dup2 and fcntl are async-signal-safe and touch no shared
            // state. The copy at 3 is not close-on-exec, so it survives the exec;
            // when `fd` is 3 already, dup2 would leave its close-on-exec flag.
            unsafe {
                cmd.pre_exec(move || {
                    let ok = if fd == 3 {
                        libc::fcntl(3, libc::F_SETFD, 0) == 0
                    } else {
                        libc::dup2(fd, 3) == 3
                    };
                    if ok {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        spawn_command(cmd, self.workers)
    }

    /// Start a server whose log goes to `log` (`--error-logfile`), not stderr:
    /// ready once that file says its workers are ready.
    pub fn start_with_log_file(self, log: &Path) -> Server {
        let workers = self.workers;
        let mut server = self.spawn();
        let deadline = Instant::now() + BOOT;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.matches(") ready").count() >= workers {
                let line = text
                    .lines()
                    .find(|l| l.contains("Listening at: http://"))
                    .expect("a Listening line before the workers are ready");
                let addr = line.split("http://").nth(1).unwrap();
                server.addr = addr.split_whitespace().next().unwrap().parse().ok();
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "not ready: {text}\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20)); // polling a file, bounded
        }
    }

    /// Start with no APP_MODULE argument (the config file names the app).
    pub fn start_without_app(mut self) -> Server {
        self.args.retain(|a| !a.is_empty());
        self.start()
    }
}

/// Spawn any command (already in its own process group, stdio piped) as a
/// [`Server`] handle: its output collected, its exit awaited, killed on drop.
pub fn spawn_command(mut cmd: Command, workers: usize) -> Server {
    let mut child = cmd.spawn().expect("the command starts");
    let pid = child.id() as i32;
    let stderr = Arc::new(Lines::default());
    let stdout = Arc::new(Lines::default());
    stderr.collect(child.stderr.take().expect("piped stderr"));
    stdout.collect(child.stdout.take().expect("piped stdout"));
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    Server {
        pid,
        stderr,
        stdout,
        exit: rx,
        status: None,
        addr: None,
        workers,
    }
}

impl ServerBuilder {
    /// Start and wait until it listens and every worker is ready.
    pub fn start(self) -> Server {
        let mut server = self.spawn();
        server.wait_ready();
        server
    }
}

pub struct Server {
    pub pid: i32,
    stderr: Arc<Lines>,
    stdout: Arc<Lines>,
    exit: Receiver<std::io::Result<ExitStatus>>,
    status: Option<ExitStatus>,
    addr: Option<SocketAddr>,
    workers: usize,
}

impl Server {
    pub fn wait_ready(&mut self) {
        self.stderr
            .wait_for(&|l| l.contains("Listening at: "), 1, BOOT)
            .unwrap_or_else(|| panic!("server did not listen; log:\n{}", self.log()));
        self.wait_log_count(|l| l.contains(") ready"), self.workers, BOOT);
        // The first TCP address, if any (a server may listen on unix sockets only);
        // every "Listening at" line comes before the first worker is ready.
        let log = self.log();
        let tcp =
            |l: &&str| l.contains("Listening at: http://") || l.contains("Listening at: https://");
        if let Some(line) = log.lines().find(tcp) {
            let addr = line
                .split("://")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .expect("address in the listening line");
            self.addr = Some(addr.parse().expect("a socket address"));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("server is ready")
    }

    /// The whole error log so far.
    pub fn log(&self) -> String {
        self.stderr.text()
    }

    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// Wait for a log line; panics with the log if it does not come.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        self.wait_log_count(pred, 1, timeout)
    }

    pub fn wait_log_count(
        &self,
        pred: impl Fn(&str) -> bool,
        count: usize,
        timeout: Duration,
    ) -> String {
        self.stderr
            .wait_for(&pred, count, timeout)
            .unwrap_or_else(|| {
                panic!(
                    "expected log line did not appear within {timeout:?}; log:\n{}",
                    self.log()
                )
            })
    }

    /// Wait for a line on stdout (the access log with `--access-logfile -`).
    pub fn wait_stdout(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        self.stdout.wait_for(&pred, 1, timeout).unwrap_or_else(|| {
            panic!(
                "expected stdout line did not appear within {timeout:?}; stdout:\n{}\nlog:\n{}",
                self.stdout(),
                self.log()
            )
        })
    }

    pub fn try_wait_log(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        self.stderr.wait_for(&pred, 1, timeout)
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).expect("signal the master");
    }

    /// Signal every process of the server, as Heroku and systemd do.
    pub fn signal_group(&self, sig: Signal) {
        killpg(Pid::from_raw(self.pid), sig).expect("signal the process group");
    }

    /// Wait for the master to exit; panics if it does not within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        match self.exit.recv_timeout(timeout) {
            Ok(Ok(status)) => {
                self.status = Some(status);
                // Read what was written up to the end, so log assertions see it all.
                self.stderr.wait_closed(Duration::from_secs(5));
                self.stdout.wait_closed(Duration::from_secs(5));
                status
            }
            _ => panic!(
                "server did not exit within {timeout:?}; log:\n{}",
                self.log()
            ),
        }
    }

    /// The status a POSIX shell would report (`$?`).
    pub fn shell_status(status: ExitStatus) -> i32 {
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.status.is_none() {
            // A quick stop lets the master reap its workers (a SIGKILLed group leaves
            // orphans for init to reap); SIGKILL everything if that does not work.
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGINT);
            if self.exit.recv_timeout(Duration::from_secs(5)).is_err() {
                let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
                let _ = self.exit.recv_timeout(Duration::from_secs(10));
            }
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        } else {
            // Workers that outlived their master would be a bug; never leave them running.
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}
