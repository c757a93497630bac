//! Stops lose nothing: every connection the kernel completed before the stop is
//! answered, later ones are refused at connect (never reset after sending), a
//! dead master leaves no listener, and a signal during start-up is held.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::http::Client;
use crate::util::{scratch, ServerBuilder};

/// What the `Connection: close` clients saw.
#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    /// Connected and sent a request, then got a reset or EOF without a response:
    /// the client cannot know whether it ran.
    lost: AtomicU64,
    refused: AtomicU64,
    examples: Mutex<Vec<String>>,
}

/// `clients` threads sending `GET path` with `Connection: close`, each on a new
/// connection, until `stop` is set.
fn close_load(
    addr: SocketAddr,
    path: &'static str,
    clients: usize,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (stop, tally) = (Arc::clone(stop), Arc::clone(tally));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                        Ok(s) => s,
                        Err(_) => {
                            // Refused, or a SYN dropped while the stop drains: nothing sent.
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let request =
                        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                    let mut got = Vec::new();
                    let outcome = s
                        .write_all(request.as_bytes())
                        .and_then(|_| s.read_to_end(&mut got));
                    if outcome.is_ok() && got.starts_with(b"HTTP/1.1 200 ") {
                        tally.answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.lost.fetch_add(1, Ordering::Relaxed);
                        let mut ex = tally.examples.lock().unwrap();
                        if ex.len() < 5 {
                            ex.push(format!(
                                "{outcome:?}, got {:?}",
                                String::from_utf8_lossy(&got[..got.len().min(40)])
                            ));
                        }
                    }
                }
            })
        })
        .collect()
}

/// The reproduction, bounded: 2 workers, a 30 ms app, 24 clients each
/// sending `Connection: close` requests in a loop, TERM in the middle; ten times.
/// Before, 9 to 19 requests per stop were sent and then reset.
#[test]
fn graceful_stops_under_connection_close_load_lose_no_request() {
    let _exclusive = crate::util::exclusive();
    let tally = Arc::new(Tally::default());
    for round in 0..10 {
        let mut server = ServerBuilder::new("basic:app").workers(2).start();
        let stop = Arc::new(AtomicBool::new(false));
        let before = tally.answered.load(Ordering::Relaxed);
        let clients = close_load(server.addr(), "/slow?0.03", 24, &stop, &tally);
        let warm = Instant::now() + Duration::from_secs(5);
        while tally.answered.load(Ordering::Relaxed) < before + 40 && Instant::now() < warm {
            std::thread::sleep(Duration::from_millis(5));
        }
        server.signal(Signal::SIGTERM);
        let status = server.wait_exit(Duration::from_secs(20));
        // Clients keep trying for a moment after the exit: refused, never lost.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(
            status.signal(),
            Some(15),
            "round {round}: the contract's status"
        );
        assert_eq!(
            tally.lost.load(Ordering::Relaxed),
            0,
            "round {round}: requests sent and then cut: {:?}\nlog:\n{}",
            tally.examples.lock().unwrap(),
            server.log()
        );
    }
    assert!(tally.answered.load(Ordering::Relaxed) >= 400);
    assert!(
        tally.refused.load(Ordering::Relaxed) > 0,
        "clients that came after the stops were refused"
    );
}

/// Connect and send `GET path`, without reading: the request then waits in the
/// listen queue (or the worker's socket) until someone answers.
fn queue_request(addr: SocketAddr, path: &str) -> Client {
    let mut c = Client::connect(addr).unwrap();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    c
}

/// One worker inside `GET busy_path`, and `queued` more requests sent on
/// connections it has not accepted: they sit in the listen queue.
fn busy_with_queue(busy_path: &str, queued: usize) -> (crate::util::Server, Client, Vec<Client>) {
    let server = ServerBuilder::new("basic:app")
        .args(&["--worker-connections", "1"])
        .start();
    let busy = queue_request(server.addr(), busy_path);
    server.wait_log(
        |l| l.contains("slow request started"),
        Duration::from_secs(10),
    );
    let queued = (0..queued)
        .map(|_| queue_request(server.addr(), "/"))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    (server, busy, queued)
}

/// The one worker is inside a request; five more clients connected and sent
/// theirs, which sit in the listen queue. A TERM answers all six.
#[test]
fn a_graceful_stop_answers_the_connections_waiting_in_the_queue() {
    let (mut server, mut busy, mut queued) = busy_with_queue("/slow?1", 5);
    server.signal(Signal::SIGTERM);
    let resp = busy.read_response(false).expect("the request in flight");
    assert_eq!(resp.text(), "slow done\n");
    for (i, c) in queued.iter_mut().enumerate() {
        let resp = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("queued request {i} was cut ({e}); log:\n{}", server.log()));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "Hello, World!\n");
        assert_eq!(resp.header("connection"), Some("close"));
    }
    assert_eq!(server.wait_exit(Duration::from_secs(15)).signal(), Some(15));
}

/// TERM to the whole process group (Heroku, systemd): the worker may see its
/// TERM before the master has stopped admitting connections; what is queued is
/// still served, not turned away with a 503.
#[test]
fn a_group_term_answers_the_queue_too() {
    let (mut server, mut busy, mut queued) = busy_with_queue("/slow?1", 3);
    server.signal_group(Signal::SIGTERM);
    assert_eq!(busy.read_response(false).unwrap().text(), "slow done\n");
    for (i, c) in queued.iter_mut().enumerate() {
        let resp = c
            .read_response(false)
            .unwrap_or_else(|e| panic!("queued request {i} was cut ({e}); log:\n{}", server.log()));
        assert_eq!(resp.status, 200, "{i}: {}", server.log());
    }
    assert_eq!(server.wait_exit(Duration::from_secs(15)).signal(), Some(15));
}

/// A quick stop cuts the request in flight, but a request that never reached
/// the app is answered 503, so its client knows it did not run.
#[test]
fn a_quick_stop_answers_503_to_the_connections_waiting_in_the_queue() {
    let (mut server, mut busy, mut queued) = busy_with_queue("/slow?5", 3);
    server.signal(Signal::SIGQUIT);
    assert!(
        busy.read_response(false).is_err(),
        "the request in flight is cut"
    );
    for (i, c) in queued.iter_mut().enumerate() {
        let resp = c.read_response(false).unwrap_or_else(|e| {
            panic!("queued request {i} was reset ({e}); log:\n{}", server.log())
        });
        assert_eq!(resp.status, 503);
        assert_eq!(resp.header("connection"), Some("close"));
    }
    assert_eq!(server.wait_exit(Duration::from_secs(15)).signal(), Some(3));
    assert!(
        server
            .log()
            .contains("3 queued connections were answered 503"),
        "log:\n{}",
        server.log()
    );
}

fn alive(pid: i32) -> bool {
    // A zombie is as good as gone: it holds no socket.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// SIGKILL the master once its worker is inside `GET path`; returns the
/// worker's pid, the request's connection and when the master was gone.
fn orphan_inside(server: &crate::util::Server, path: &str) -> (i32, Client, Instant) {
    let worker = crate::util::worker_pid(server.addr());
    let busy = queue_request(server.addr(), path);
    server.wait_log(
        |l| l.contains("slow request started"),
        Duration::from_secs(10),
    );
    server.signal(Signal::SIGKILL);
    assert!(wait_gone(server.pid, Duration::from_secs(5)));
    (worker, busy, Instant::now())
}

/// Master SIGKILLed while its worker is inside a request: the port is free at
/// once for a new master, the request still gets its answer, the worker exits.
#[test]
fn a_worker_whose_master_died_frees_the_port_and_finishes_its_request() {
    let server = ServerBuilder::new("basic:app").start();
    let addr = server.addr();
    let (worker, mut busy, killed) = orphan_inside(&server, "/slow?2");
    // What a restarted server does first: bind the port (std sets SO_REUSEADDR).
    let rebound = loop {
        match TcpListener::bind(addr) {
            Ok(l) => break l,
            Err(e) if killed.elapsed() < Duration::from_secs(1) => {
                assert_eq!(e.kind(), ErrorKind::AddrInUse);
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the port is still held 1 s after the master died: {e}"),
        }
    };
    assert!(
        killed.elapsed() < Duration::from_millis(500),
        "bound after {:?}",
        killed.elapsed()
    );
    drop(rebound);
    let resp = busy.read_response(false).expect("the request in flight");
    assert_eq!(resp.text(), "slow done\n");
    assert!(
        wait_gone(worker, Duration::from_secs(5)),
        "the orphan exits"
    );
}

/// Nothing enforces `--timeout` on an orphan but itself: a request that never
/// ends ends the worker at the timeout.
#[test]
fn an_orphan_worker_stuck_in_a_request_exits_at_the_timeout() {
    let server = ServerBuilder::new("basic:app")
        .args(&["--timeout", "2"])
        .start();
    let (worker, _busy, killed) = orphan_inside(&server, "/slow?60");
    assert!(
        wait_gone(worker, Duration::from_secs(8)),
        "the orphan is still running 8 s after its master died"
    );
    assert!(
        killed.elapsed() >= Duration::from_millis(1500),
        "not before the timeout"
    );
    let _ = kill(Pid::from_raw(worker), Signal::SIGKILL);
}

/// A config file that takes a while to read (here: it sleeps) keeps the master
/// in start-up; a signal sent then is held, not met with its default action.
fn slow_config(name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    let conf = dir.join("gunicorn.conf.py");
    std::fs::write(&conf, "import time\ntime.sleep(1.5)\nworkers = 1\n").unwrap();
    conf
}

#[test]
fn a_hup_during_start_up_is_held_and_the_server_comes_up() {
    let conf = slow_config("slow-config-hup");
    let mut server = ServerBuilder::new("basic:app")
        .args(&["-c", conf.to_str().unwrap()])
        .spawn();
    std::thread::sleep(Duration::from_millis(500));
    server.signal(Signal::SIGHUP);
    server.wait_ready();
    server.wait_log(
        |l| l.contains("Handling signal: hup"),
        Duration::from_secs(10),
    );
    assert_eq!(
        crate::util::http::get(server.addr(), "/").unwrap().status,
        200
    );
}

#[test]
fn a_term_during_start_up_stops_with_the_contracts_status() {
    let conf = slow_config("slow-config-term");
    let mut server = ServerBuilder::new("basic:app")
        .args(&["-c", conf.to_str().unwrap(), "--term-exit", "0"])
        .spawn();
    std::thread::sleep(Duration::from_millis(500));
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(0),
        "--term-exit 0, not death by the default action; log:\n{}",
        server.log()
    );
    assert!(server
        .log()
        .contains("Shutting down: graceful stop after SIGTERM"));
    assert!(
        !server.log().contains("Booting worker"),
        "no worker is started for a server already stopping:\n{}",
        server.log()
    );
}

/// `--drain-delay`: after TERM the server keeps serving for that long (each
/// response closing its connection), as a Kubernetes pod must while the
/// endpoint is taken out; then the graceful stop, with the contract's status.
#[test]
fn a_drain_delay_serves_a_request_sent_a_second_after_term() {
    let mut server = ServerBuilder::new("basic:app")
        .args(&["--drain-delay", "2"])
        .start();
    let mut kept = Client::connect(server.addr()).unwrap();
    assert_eq!(kept.get("/").unwrap().status, 200);
    let sent = Instant::now();
    server.signal(Signal::SIGTERM);
    server.wait_log(
        |l| l.contains("drain delay (--drain-delay)"),
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_secs(1));
    let late = crate::util::http::get(server.addr(), "/").expect("served during the delay");
    assert_eq!(late.status, 200);
    assert_eq!(late.header("connection"), Some("close"));
    let next = kept
        .get("/")
        .expect("a kept-alive connection is served too");
    assert_eq!(next.header("connection"), Some("close"));
    assert_eq!(server.wait_exit(Duration::from_secs(15)).signal(), Some(15));
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "not before the delay"
    );
}

#[test]
fn a_second_term_ends_the_drain_delay() {
    let mut server = ServerBuilder::new("basic:app")
        .args(&["--drain-delay", "30"])
        .start();
    let sent = Instant::now();
    server.signal(Signal::SIGTERM);
    server.wait_log(
        |l| l.contains("drain delay (--drain-delay)"),
        Duration::from_secs(5),
    );
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(10)).signal(), Some(15));
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
    assert!(
        server.log().contains("the drain delay ends now"),
        "{}",
        server.log()
    );
}

/// Heroku and systemd's default signal the whole process group: the workers'
/// own TERM does not cut the master's drain delay short.
#[test]
fn a_drain_delay_holds_for_a_process_group_term_too() {
    let mut server = ServerBuilder::new("basic:app")
        .workers(2)
        .args(&["--drain-delay", "2"])
        .start();
    server.signal_group(Signal::SIGTERM);
    server.wait_log(
        |l| l.contains("drain delay (--drain-delay)"),
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..4 {
        let late = crate::util::http::get(server.addr(), "/").expect("served during the delay");
        assert_eq!(late.status, 200, "{}", server.log());
    }
    assert_eq!(server.wait_exit(Duration::from_secs(15)).signal(), Some(15));
    assert!(
        !server.log().contains("not sent by the master"),
        "{}",
        server.log()
    );
}
