//! Side by side: ferricorn, gunicorn and waitress serve the same app
//! (tests/apps/compare_app.py) and get the same stopping signal while a 2 s
//! request is in flight. Each row records what a shell and a platform see:
//! the exit status (`$?`), the time from the signal to the exit, what happened
//! to the in-flight request and to a new connection made after the signal.
//!
//! ferricorn's rows are checked against docs/signals.md; gunicorn's and
//! waitress's against how they behaved when measured (docs/comparison.md), so
//! the suite notices when a peer changes. `cargo test --test integration compare
//! -- --nocapture` prints the table (with `COMPARE_LOGS=1`, every server's log too).
//!
//! gunicorn and waitress come from the venv scripts/test creates
//! (`FERRICORN_TEST_VENV`, else `<repo>/.venv`); without them these tests fail.

use std::fmt;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::util::http::Client;
use crate::util::{apps_dir, bin, Server};

/// Until the server answers `GET /`.
const BOOT: Duration = Duration::from_secs(20);
/// From the signal (or the follow-up TERM) to the exit.
const EXIT: Duration = Duration::from_secs(15);
/// How long a new connection is retried until it is refused.
const PROBE: Duration = Duration::from_secs(1);
/// One connection attempt of the probe, at most.
const ATTEMPT: Duration = Duration::from_millis(250);
/// What the app prints once it is inside `/slow`.
const MARKER: &str = "compare: slow request started";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    Ferricorn,
    Gunicorn,
    Waitress,
}

const PEERS: [Peer; 3] = [Peer::Ferricorn, Peer::Gunicorn, Peer::Waitress];

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Ferricorn => "ferricorn",
            Peer::Gunicorn => "gunicorn",
            Peer::Waitress => "waitress",
        }
    }

    /// The line each worker writes once it is fully started, and how many workers.
    fn worker_ready(self) -> (&'static str, usize) {
        match self {
            Peer::Ferricorn => (") ready", 2),
            // The app module's import line: gunicorn's workers load it right after
            // installing their signal handlers. A stop signal that reaches a worker
            // before that is lost (it still runs the master's handlers), and the
            // master then waits its 30 s graceful timeout.
            Peer::Gunicorn => ("compare: app loaded in", 2),
            Peer::Waitress => ("compare: app loaded in", 1),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Term,
    Int,
    Quit,
    Hup,
    GroupTerm,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Term => "TERM",
            Case::Int => "INT",
            Case::Quit => "QUIT",
            Case::Hup => "HUP",
            Case::GroupTerm => "TERM to the group",
        }
    }

    fn send(self, pid: i32) {
        let pid = Pid::from_raw(pid);
        match self {
            Case::Term => kill(pid, Signal::SIGTERM),
            Case::Int => kill(pid, Signal::SIGINT),
            Case::Quit => kill(pid, Signal::SIGQUIT),
            Case::Hup => kill(pid, Signal::SIGHUP),
            Case::GroupTerm => killpg(pid, Signal::SIGTERM),
        }
        .expect("signal the server");
    }
}

use crate::util::test_venv as venv;

/// A console script of the test venv; a missing one fails the test, never skips it.
fn venv_tool(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.is_file(),
        "{name} is not installed at {}: run ./scripts/test, which pip-installs \
         tests/requirements.txt into .venv (or set FERRICORN_TEST_VENV to a venv that has it)",
        path.display()
    );
    path
}

/// gunicorn 25+ opens a control socket under $HOME unless told not to.
fn gunicorn_has_no_control_socket_flag(gunicorn: &Path) -> bool {
    static FLAG: OnceLock<bool> = OnceLock::new();
    *FLAG.get_or_init(|| {
        let out = Command::new(gunicorn)
            .arg("--help")
            .env_remove("GUNICORN_CMD_ARGS")
            .stdin(Stdio::null())
            .output()
            .expect("gunicorn --help runs");
        String::from_utf8_lossy(&out.stdout).contains("--no-control-socket")
    })
}

/// Everything a server writes (stdout and stderr, interleaved as read).
#[derive(Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Output {
    fn collect(self: &Arc<Self>, stream: impl std::io::Read + Send + 'static) {
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                me.lines.lock().unwrap().push(line);
                me.changed.notify_all();
            }
        });
    }

    /// Wait until `needle` was written `count` times.
    fn wait_for(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if lines
                .iter()
                .map(|l| l.matches(needle).count())
                .sum::<usize>()
                >= count
            {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines = self.changed.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// One server in its own process group; Drop SIGKILLs the group if it still runs.
struct Proc {
    peer: Peer,
    pid: i32,
    addr: SocketAddr,
    out: Arc<Output>,
    exit: Receiver<(ExitStatus, Instant)>,
    exited: Option<(ExitStatus, Instant)>,
}

impl Proc {
    fn spawn(peer: Peer) -> Proc {
        // Port 0: the kernel picks a free port, each server logs the one it got.
        let bind = "127.0.0.1:0";
        let mut cmd = match peer {
            Peer::Ferricorn => {
                let mut c = Command::new(bin());
                c.arg("--chdir").arg(apps_dir());
                c.args(["-w", "2", "-b", bind, "compare_app:app"]);
                c
            }
            Peer::Gunicorn => {
                let gunicorn = venv_tool("gunicorn");
                let mut c = Command::new(&gunicorn);
                c.arg("--chdir").arg(apps_dir());
                c.args(["-w", "2", "-b", bind, "compare_app:app"]);
                if gunicorn_has_no_control_socket_flag(&gunicorn) {
                    c.arg("--no-control-socket");
                }
                c
            }
            Peer::Waitress => {
                let mut c = Command::new(venv_tool("waitress-serve"));
                c.arg(format!("--listen={bind}")).arg("compare_app:app");
                c
            }
        };
        // waitress-serve imports from its working directory.
        cmd.current_dir(apps_dir())
            .env_remove("PORT")
            .env_remove("WEB_CONCURRENCY")
            .env_remove("GUNICORN_CMD_ARGS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a case can signal it as Heroku and systemd do, and
            // Drop can kill everything the server started.
            .process_group(0);
        // SAFETY: setrlimit and sigaction are async-signal-safe and touch no shared state.
        unsafe {
            cmd.pre_exec(|| {
                use nix::sys::resource::{setrlimit, Resource};
                use nix::sys::signal::{signal, SigHandler};
                // No core files in tests/apps from a server that dies by SIGQUIT.
                setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(std::io::Error::from)?;
                // Start as a platform starts a process: default dispositions, even
                // when the test runs in the background of a shell that ignores INT
                // and QUIT (CPython then installs no KeyboardInterrupt handler).
                for sig in [
                    Signal::SIGINT,
                    Signal::SIGQUIT,
                    Signal::SIGTERM,
                    Signal::SIGHUP,
                ] {
                    signal(sig, SigHandler::SigDfl).map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", peer.name()));
        let out = Arc::new(Output::default());
        out.collect(child.stdout.take().expect("piped stdout"));
        out.collect(child.stderr.take().expect("piped stderr"));
        let pid = child.id() as i32;
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send((status, Instant::now()));
            }
        });
        let mut proc = Proc {
            peer,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            out,
            exit: rx,
            exited: None,
        };
        let port = proc.wait_port();
        proc.addr.set_port(port);
        proc
    }

    fn log(&self) -> String {
        self.out.text()
    }

    /// The exit status and when it came, waiting up to `timeout`.
    fn try_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, Instant)> {
        if self.exited.is_none() {
            self.exited = self.exit.recv_timeout(timeout).ok();
        }
        self.exited
    }

    fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Instant) {
        self.try_exit(timeout).unwrap_or_else(|| {
            panic!(
                "{} did not exit within {timeout:?}; log:\n{}",
                self.peer.name(),
                self.log()
            )
        })
    }

    /// The port from the first line with the listening address: ferricorn's and
    /// gunicorn's "Listening at: http://127.0.0.1:P (pid)", waitress's
    /// "Serving on http://127.0.0.1:P".
    fn wait_port(&mut self) -> u16 {
        const AT: &str = "http://127.0.0.1:";
        if !self.out.wait_for(AT, 1, BOOT) {
            let exited = self.try_exit(Duration::ZERO).map(|(s, _)| s);
            panic!(
                "{} did not log its address within {BOOT:?} (exit: {exited:?}); log:\n{}",
                self.peer.name(),
                self.log()
            );
        }
        let line = self
            .out
            .lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(AT))
            .cloned();
        let line = line.expect("the line wait_for saw");
        let digits: String = line[line.find(AT).unwrap() + AT.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("a port in {line:?}"))
    }

    /// Wait until `generations` generations of workers have started.
    fn wait_workers(&self, generations: usize) {
        let (needle, workers) = self.peer.worker_ready();
        assert!(
            self.out.wait_for(needle, workers * generations, BOOT),
            "{}: {} workers did not start within {BOOT:?}; log:\n{}",
            self.peer.name(),
            workers * generations,
            self.log()
        );
    }

    /// Every worker started, and `GET /` answers 200.
    fn wait_serving(&mut self) {
        self.wait_workers(1);
        let deadline = Instant::now() + BOOT;
        loop {
            if let Some((status, _)) = self.try_exit(Duration::ZERO) {
                panic!(
                    "{} exited while starting ({status}); log:\n{}",
                    self.peer.name(),
                    self.log()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "{} did not answer GET / within {BOOT:?}; log:\n{}",
                    self.peer.name(),
                    self.log()
                );
            }
            if get_root(self.addr, left).is_ok_and(|s| s == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = Pid::from_raw(self.pid);
        if self.try_exit(Duration::ZERO).is_none() {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = self.try_exit(Duration::from_secs(10));
        }
        // Workers that outlived their master must not stay around either.
        let _ = killpg(group, Signal::SIGKILL);
    }
}

/// `GET /` on a fresh connection, waiting at most `timeout` for the answer.
fn get_root(addr: SocketAddr, timeout: Duration) -> std::io::Result<u16> {
    let mut c = Client::connect(addr)?;
    c.stream
        .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    Ok(c.get("/")?.status)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum InFlight {
    Answered(u16, String),
    /// No response: the error reading it.
    Cut(ErrorKind),
}

impl fmt::Display for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InFlight::Answered(status, body) if body.len() <= 16 => {
                write!(f, "{status} {body:?}")
            }
            InFlight::Answered(status, body) => write!(f, "{status} ({} bytes)", body.len()),
            InFlight::Cut(ErrorKind::UnexpectedEof) => write!(f, "cut (closed, no response)"),
            InFlight::Cut(ErrorKind::ConnectionReset) => write!(f, "cut (reset, no response)"),
            InFlight::Cut(kind) => write!(f, "cut ({kind:?})"),
        }
    }
}

fn in_flight(result: std::io::Result<crate::util::http::Response>) -> InFlight {
    match result {
        Ok(resp) => InFlight::Answered(resp.status, resp.text()),
        Err(e) => InFlight::Cut(e.kind()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum NewConn {
    /// Refused this long after the signal.
    Refused(Duration),
    /// Still accepted after PROBE; what a `GET /` on it then got.
    Accepted(InFlight),
    /// connect(2) failed otherwise (never seen so far; no case expects it).
    Failed(String, Duration),
}

impl fmt::Display for NewConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewConn::Refused(after) => write!(f, "refused ({} ms)", after.as_millis()),
            NewConn::Accepted(get) => write!(f, "accepted; GET / -> {get}"),
            NewConn::Failed(e, after) => {
                write!(f, "connect failed after {} ms: {e}", after.as_millis())
            }
        }
    }
}

/// Connect until refused, for up to PROBE; then a `GET /` on a connection that is
/// still accepted shows whether anyone serves it (5 s at most).
fn probe_new_connection(addr: SocketAddr, sent: Instant) -> NewConn {
    let deadline = Instant::now() + PROBE;
    while Instant::now() < deadline {
        match TcpStream::connect_timeout(&addr, ATTEMPT) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return NewConn::Refused(sent.elapsed())
            }
            // Not admitted: a stopping ferricorn drops new SYNs while it drains
            // what was queued (a real client retransmits; this one tries anew).
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            // A connect racing the listener's close: the handshake landed in the
            // backlog and the close reset it. The next one tells what a client
            // now gets (this race made compare_int fail about once in 15 runs).
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => return NewConn::Failed(e.to_string(), sent.elapsed()),
            Ok(conn) => drop(conn),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match Client::connect(addr) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => NewConn::Refused(sent.elapsed()),
        Err(e) => NewConn::Failed(e.to_string(), sent.elapsed()),
        Ok(mut c) => {
            c.stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            NewConn::Accepted(in_flight(c.get("/")))
        }
    }
}

/// What one server did with one case.
struct Row {
    peer: Peer,
    case: Case,
    /// None: still running after the signal (a reload).
    status: Option<ExitStatus>,
    to_exit: Option<Duration>,
    in_flight: InFlight,
    new_conn: NewConn,
    /// Still running after the signal: `GET /` then, and the TERM that stopped it.
    after: Option<(InFlight, ExitStatus, Duration)>,
    log: String,
}

fn shell(status: ExitStatus) -> String {
    match status.signal() {
        Some(n) => format!(
            "{} (by SIG{}{})",
            Server::shell_status(status),
            Signal::try_from(n).map_or("?", |s| &s.as_str()[3..]),
            if status.core_dumped() { ", core" } else { "" }
        ),
        None => Server::shell_status(status).to_string(),
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status.map_or("- (still running)".into(), shell);
        let to_exit = self
            .to_exit
            .map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()));
        let after = match &self.after {
            Some((get, status, took)) => format!(
                "GET / -> {get}; TERM -> {} after {:.2} s",
                shell(*status),
                took.as_secs_f64()
            ),
            None => "-".into(),
        };
        write!(
            f,
            "| {} | {} | {status} | {to_exit} | {} | {} | {after} |",
            self.case.name(),
            self.peer.name(),
            self.in_flight,
            self.new_conn
        )
    }
}

fn measure(peer: Peer, case: Case) -> Row {
    let mut server = Proc::spawn(peer);
    server.wait_serving();
    let mut slow = Client::connect(server.addr).expect("connect for /slow");
    slow.send(b"GET /slow HTTP/1.1\r\nHost: compare\r\n\r\n")
        .expect("send /slow");
    assert!(
        server.out.wait_for(MARKER, 1, Duration::from_secs(10)),
        "{}: /slow did not start; log:\n{}",
        peer.name(),
        server.log()
    );
    let sent = Instant::now();
    case.send(server.pid);
    let reader = std::thread::spawn(move || in_flight(slow.read_response(false)));
    let new_conn = probe_new_connection(server.addr, sent);
    let in_flight = reader.join().expect("the reader thread");
    let (status, to_exit, after) =
        if case == Case::Hup && server.try_exit(Duration::from_millis(100)).is_none() {
            // A reload: it must still serve; then stop it, once the new
            // generation of workers is up.
            server.wait_workers(2);
            let get = in_flight_get(server.addr);
            let term = Instant::now();
            Case::Term.send(server.pid);
            let (status, at) = server.wait_exit(EXIT);
            (None, None, Some((get, status, at - term)))
        } else {
            let (status, at) = server.wait_exit(EXIT);
            (Some(status), Some(at - sent), None)
        };
    Row {
        peer,
        case,
        status,
        to_exit,
        in_flight,
        new_conn,
        after,
        log: server.log(),
    }
}

fn in_flight_get(addr: SocketAddr) -> InFlight {
    match Client::connect(addr) {
        Ok(mut c) => in_flight(c.get("/")),
        Err(e) => InFlight::Cut(e.kind()),
    }
}

/// The three servers, concurrently (the machine has two cores; they mostly sleep).
fn run(case: Case) -> Vec<Row> {
    // Fail before starting anything if a peer is missing.
    venv_tool("gunicorn");
    venv_tool("waitress-serve");
    let rows: Vec<Row> = std::thread::scope(|s| {
        let handles: Vec<_> = PEERS
            .iter()
            .map(|&peer| s.spawn(move || measure(peer, case)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    eprintln!(
        "\n| signal | server | exit ($?) | signal to exit | in-flight /slow | new connection | if still running |"
    );
    eprintln!("|---|---|---|---|---|---|---|");
    for row in &rows {
        eprintln!("{row}");
    }
    if std::env::var_os("COMPARE_LOGS").is_some() {
        for row in &rows {
            eprintln!("--- {} {}:\n{}", row.case.name(), row.peer.name(), row.log);
        }
    }
    rows
}

/// What a server is expected to do with a case.
#[derive(Clone, Copy, Debug)]
enum Exit {
    /// Exits with this code.
    Code(i32),
    /// Dies by this signal (a shell reads 128+n).
    By(Signal),
    /// Keeps serving; the TERM that follows then ends it like this.
    KeepsServing(&'static Exit),
}

#[derive(Clone, Copy, Debug)]
enum Req {
    /// 200 "slow done".
    Completes,
    /// Answered with this status instead.
    Status(u16),
    /// No response at all.
    Cut,
}

#[derive(Clone, Copy, Debug)]
enum Conn {
    /// Refused within PROBE of the signal.
    Refused,
    /// Still accepted by the kernel after PROBE, but nobody answers it.
    AcceptedUnanswered,
    /// Accepted and answered 200 "ok".
    Served,
}

struct Want {
    exit: Exit,
    in_flight: Req,
    new_conn: Conn,
    /// Upper bound from the signal to the exit.
    within: Duration,
}

fn exit_matches(status: ExitStatus, want: Exit) -> bool {
    match want {
        Exit::Code(code) => status.code() == Some(code),
        Exit::By(sig) => status.signal() == Some(sig as i32),
        Exit::KeepsServing(_) => false,
    }
}

fn req_matches(got: &InFlight, want: Req) -> bool {
    match (got, want) {
        (InFlight::Answered(200, body), Req::Completes) => body == "slow done",
        (InFlight::Answered(status, _), Req::Status(s)) => *status == s,
        (InFlight::Cut(_), Req::Cut) => true,
        _ => false,
    }
}

fn check(rows: &[Row], peer: Peer, want: Want) {
    let row = rows
        .iter()
        .find(|r| r.peer == peer)
        .expect("a row per server");
    let fail = |what: &str| -> ! {
        panic!(
            "{} after {}: {what}\nmeasured: {row}\nlog:\n{}",
            peer.name(),
            row.case.name(),
            row.log
        )
    };
    match (want.exit, row.status, &row.after) {
        (Exit::KeepsServing(then), None, Some((get, status, took))) => {
            if !req_matches(get, Req::Status(200)) {
                fail("it should still serve GET /");
            }
            if !exit_matches(*status, *then) || *took > want.within {
                fail(&format!(
                    "the TERM that follows should end it: {then:?} within {:?}",
                    want.within
                ));
            }
        }
        (Exit::KeepsServing(_), _, _) => fail("it should keep running"),
        (exit, Some(status), _) => {
            if !exit_matches(status, exit) {
                fail(&format!("expected {exit:?}"));
            }
            if row.to_exit.is_none_or(|d| d > want.within) {
                fail(&format!(
                    "expected to exit within {:?} of the signal",
                    want.within
                ));
            }
        }
        (exit, None, _) => fail(&format!("expected {exit:?}, it kept running")),
    }
    if !req_matches(&row.in_flight, want.in_flight) {
        fail(&format!(
            "the in-flight request: expected {:?}",
            want.in_flight
        ));
    }
    let conn_ok = match (&row.new_conn, want.new_conn) {
        (NewConn::Refused(_), Conn::Refused) => true,
        (NewConn::Accepted(InFlight::Cut(_)), Conn::AcceptedUnanswered) => true,
        (NewConn::Accepted(InFlight::Answered(200, body)), Conn::Served) => body == "ok",
        _ => false,
    };
    if !conn_ok {
        fail(&format!("a new connection: expected {:?}", want.new_conn));
    }
}

/// Stops that wait for the 2 s request.
const DRAIN: Duration = Duration::from_secs(10);
/// Stops that do not wait for it.
const QUICK: Duration = Duration::from_millis(1900);

#[test]
fn compare_term() {
    let _exclusive = crate::util::exclusive();
    let rows = run(Case::Term);
    // docs/signals.md: graceful stop, new connections refused at once, 143.
    let want = Want {
        exit: Exit::By(Signal::SIGTERM),
        in_flight: Req::Completes,
        new_conn: Conn::Refused,
        within: DRAIN,
    };
    check(&rows, Peer::Ferricorn, want);
    // gunicorn drains too but exits 0; its busy sync worker still holds the
    // listening socket, so the kernel accepts new connections nobody will serve.
    let want = Want {
        exit: Exit::Code(0),
        in_flight: Req::Completes,
        new_conn: Conn::AcceptedUnanswered,
        within: DRAIN,
    };
    check(&rows, Peer::Gunicorn, want);
    // waitress has no TERM handler: it dies at once, cutting the request.
    let want = Want {
        exit: Exit::By(Signal::SIGTERM),
        in_flight: Req::Cut,
        new_conn: Conn::Refused,
        within: QUICK,
    };
    check(&rows, Peer::Waitress, want);
}

#[test]
fn compare_group_term() {
    let _exclusive = crate::util::exclusive();
    // Heroku, systemd: TERM to every process of the server.
    let rows = run(Case::GroupTerm);
    let want = Want {
        exit: Exit::By(Signal::SIGTERM),
        in_flight: Req::Completes,
        new_conn: Conn::Refused,
        within: DRAIN,
    };
    check(&rows, Peer::Ferricorn, want);
    let want = Want {
        exit: Exit::Code(0),
        in_flight: Req::Completes,
        new_conn: Conn::AcceptedUnanswered,
        within: DRAIN,
    };
    check(&rows, Peer::Gunicorn, want);
    let want = Want {
        exit: Exit::By(Signal::SIGTERM),
        in_flight: Req::Cut,
        new_conn: Conn::Refused,
        within: QUICK,
    };
    check(&rows, Peer::Waitress, want);
}

#[test]
fn compare_int() {
    let _exclusive = crate::util::exclusive();
    let rows = run(Case::Int);
    // docs/signals.md: quick stop, the request is cut, 130.
    let want = Want {
        exit: Exit::By(Signal::SIGINT),
        in_flight: Req::Cut,
        new_conn: Conn::Refused,
        within: QUICK,
    };
    check(&rows, Peer::Ferricorn, want);
    // gunicorn's worker raises SystemExit inside the request: the client gets a 500.
    let want = Want {
        exit: Exit::Code(0),
        in_flight: Req::Status(500),
        new_conn: Conn::Refused,
        within: DRAIN,
    };
    check(&rows, Peer::Gunicorn, want);
    // waitress catches KeyboardInterrupt and waits for its task threads: the
    // request completes, then it exits 0.
    let want = Want {
        exit: Exit::Code(0),
        in_flight: Req::Completes,
        new_conn: Conn::AcceptedUnanswered,
        within: DRAIN,
    };
    check(&rows, Peer::Waitress, want);
}

#[test]
fn compare_quit() {
    let _exclusive = crate::util::exclusive();
    let rows = run(Case::Quit);
    // docs/signals.md: quick stop, as INT, 131.
    let want = Want {
        exit: Exit::By(Signal::SIGQUIT),
        in_flight: Req::Cut,
        new_conn: Conn::Refused,
        within: QUICK,
    };
    check(&rows, Peer::Ferricorn, want);
    let want = Want {
        exit: Exit::Code(0),
        in_flight: Req::Status(500),
        new_conn: Conn::Refused,
        within: DRAIN,
    };
    check(&rows, Peer::Gunicorn, want);
    // No handler: dies by the signal (core files are disabled for the test).
    let want = Want {
        exit: Exit::By(Signal::SIGQUIT),
        in_flight: Req::Cut,
        new_conn: Conn::Refused,
        within: QUICK,
    };
    check(&rows, Peer::Waitress, want);
}

#[test]
fn compare_hup() {
    let _exclusive = crate::util::exclusive();
    let rows = run(Case::Hup);
    // docs/signals.md: reload; the old generation finishes its request.
    let want = Want {
        exit: Exit::KeepsServing(&Exit::By(Signal::SIGTERM)),
        in_flight: Req::Completes,
        new_conn: Conn::Served,
        within: DRAIN,
    };
    check(&rows, Peer::Ferricorn, want);
    let want = Want {
        exit: Exit::KeepsServing(&Exit::Code(0)),
        in_flight: Req::Completes,
        new_conn: Conn::Served,
        within: DRAIN,
    };
    check(&rows, Peer::Gunicorn, want);
    // No handler: HUP kills it.
    let want = Want {
        exit: Exit::By(Signal::SIGHUP),
        in_flight: Req::Cut,
        new_conn: Conn::Refused,
        within: QUICK,
    };
    check(&rows, Peer::Waitress, want);
}
