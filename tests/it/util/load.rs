//! A bounded load generator for zero-downtime tests: keep-alive clients that count
//! every request that did not get a complete 200 (what wrk reports as socket
//! errors and non-2xx). A server closing a connection after a complete response
//! (`Connection: close`) is not an error: the client reconnects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::http::Client;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, for the assertion message.
    pub errors: Vec<String>,
}

impl Load {
    /// Start `clients` threads hammering `GET path` until [`Load::finish`].
    pub fn start(addr: SocketAddr, path: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let threads = (0..clients)
            .map(|_| {
                let (stop, counts, path) =
                    (Arc::clone(&stop), Arc::clone(&counts), path.to_string());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    let mut client: Option<Client> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let c = match client.as_mut() {
                            Some(c) => c,
                            None => match Client::connect(addr) {
                                Ok(c) => client.insert(c),
                                Err(e) => {
                                    counts.failed.fetch_add(1, Ordering::Relaxed);
                                    errors.push(format!("connect: {e}"));
                                    continue;
                                }
                            },
                        };
                        match c.get(&path) {
                            Ok(resp) if resp.status == 200 => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                                if resp
                                    .header("connection")
                                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                                {
                                    client = None;
                                }
                            }
                            Ok(resp) => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(format!("status {}", resp.status));
                            }
                            Err(e) => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(format!("request: {e}"));
                                client = None;
                            }
                        }
                    }
                    errors.truncate(5);
                    errors
                })
            })
            .collect();
        Load {
            stop,
            counts,
            threads,
        }
    }

    pub fn ok_so_far(&self) -> u64 {
        self.counts.ok.load(Ordering::Relaxed)
    }

    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for t in self.threads {
            errors.extend(t.join().unwrap_or_default());
        }
        LoadReport {
            ok: self.counts.ok.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
            errors,
        }
    }
}
