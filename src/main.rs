//! `ferricorn`: parse the settings, bind, run the master, exit as it says.
//!
//! The exit status is the product: every path out of `main` goes through
//! [`ferricorn_signals::exit_with`], and it is the last thing that runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ferricorn_config::{Cli, Config, ProcessEnv};
use ferricorn_signals::{exit_code, exit_with, Exit};
use log::{error, info};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() {
                exit_code::USAGE_ERROR
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let config = match Config::resolve(cli, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(exit_code::CONFIG_ERROR);
        }
    };
    ferricorn_log::init(config.log_level);
    exit_with(serve(&config))
}

fn serve(config: &Config) -> Exit {
    if let Some(dir) = &config.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            error!(
                "invalid value `{}` for `chdir` (from --chdir): {e}",
                dir.display()
            );
            return Exit::Code(exit_code::CONFIG_ERROR);
        }
    }
    let app_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let listeners = match ferricorn_master::bind_all(&config.binds, config.backlog) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return Exit::Code(exit_code::BIND_FAILED);
        }
    };
    let master_pid = std::process::id() as i32;
    info!("Starting ferricorn {}", env!("CARGO_PKG_VERSION"));
    for l in &listeners {
        // tests/it/util waits for this line to learn the port.
        info!("Listening at: http://{} ({master_pid})", l.addr);
    }
    info!("Using worker: sync");
    let worker = ferricorn_worker::WorkerOptions {
        app: config.app.clone(),
        app_dir,
        pythonpath: config.pythonpath.clone(),
        multiprocess: config.workers > 1,
        worker_id: 0,
        settings: ferricorn_worker::default_settings(config.keepalive, master_pid),
    };
    let mut spawn = |child: ferricorn_master::ChildStart| {
        let mut opts = worker.clone();
        opts.worker_id = child.worker_id;
        ferricorn_worker::run(opts, child.listeners, child.status)
    };
    ferricorn_master::run(config, listeners, &mut spawn)
}
