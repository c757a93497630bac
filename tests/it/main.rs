//! Integration tests: each starts the real `ferricorn` binary on 127.0.0.1 and
//! checks what a user sees — responses, log lines, exit statuses.

#[allow(dead_code)]
mod util;

mod activation;
mod app_loading;
mod app_processes;
mod balance;
mod bench_smoke;
mod compare;
mod config;
mod deploy_docs;
mod django;
mod flask;
mod framing;
mod interpreters;
mod metrics;
mod nginx;
mod notify;
mod packaging;
mod preload;
mod procfile;
mod python;
mod request_body;
mod scoreboard;
mod serving;
mod signals;
mod slow_clients;
mod statsd;
mod stops;
mod streaming;
mod supervision;
mod threads;
mod tls;
mod unix;
mod upgrade;
mod wsgi;
mod zero_downtime;
