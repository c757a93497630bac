//! Connections spread over workers: a burst of keep-alive connections must not
//! all land on whichever worker woke first.

use std::collections::HashMap;

use crate::util::http::Client;
use crate::util::ServerBuilder;

/// The first of up to three bursts whose split `fair` accepts, else the last.
/// A worker the machine does not schedule for the whole burst (the rest of the
/// suite runs beside these tests) leaves it to its peers, by design; without
/// fair-share accepts every burst lands on one worker, so three still fail.
fn fair_split(
    server: &crate::util::Server,
    n: usize,
    path: &str,
    fair: impl Fn(&HashMap<String, usize>) -> bool,
) -> HashMap<String, usize> {
    let mut counts = split_by(server, n, path);
    for _ in 1..3 {
        if fair(&counts) {
            break;
        }
        counts = split_by(server, n, path);
    }
    counts
}

/// Open `n` connections at once, then ask each `path` (which says who serves it).
fn split_by(server: &crate::util::Server, n: usize, path: &str) -> HashMap<String, usize> {
    let mut clients: Vec<Client> = (0..n)
        .map(|_| Client::connect(server.addr()).unwrap())
        .collect();
    let mut counts = HashMap::new();
    for c in &mut clients {
        let pid = c.get(path).unwrap().text();
        *counts.entry(pid).or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_burst_of_keep_alive_connections_is_spread_over_the_workers() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app").workers(2).start();
    let counts = fair_split(&server, 40, "/pid", |c| {
        c.len() == 2 && c.values().all(|&n| n >= 10)
    });
    assert_eq!(counts.len(), 2, "{counts:?}");
    // Even would be 20/20; a worker leaves new connections to its peer once it
    // holds more than one above the average. A peer that is not scheduled within
    // 2 ms (a loaded machine) loses the connection to the other after all, so
    // the bound is 25 % each; without fair-share accepts it was 40/0.
    assert!(counts.values().all(|&n| n >= 10), "{counts:?}");
}

#[test]
fn threads_count_their_connections_toward_the_workers_share() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app")
        .workers(2)
        .args(&["--threads", "2"])
        .start();
    let counts = fair_split(&server, 40, "/pid", |c| {
        c.len() == 2 && c.values().all(|&n| n >= 10)
    });
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.values().all(|&n| n >= 10), "{counts:?}");
}

#[test]
fn connections_are_spread_over_the_threads_of_a_worker() {
    let _exclusive = crate::util::exclusive();
    let server = ServerBuilder::new("basic:app")
        .workers(1)
        .args(&["--threads", "4"])
        .start();
    // Each thread serves its own connections one request at a time: one that
    // held most of them would make them wait for each other.
    let counts = fair_split(&server, 40, "/thread-id", |c| {
        c.len() == 4 && c.values().all(|&n| n >= 5)
    });
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|&n| n >= 5), "{counts:?}");
}
