//! The master process: binds the listening sockets, forks sync workers that share
//! them, supervises them, and turns signals into actions and an exit status.
//!
//! The master runs no Python (the process it runs in hosts an idle interpreter; the
//! fork hooks it is given keep that interpreter consistent across each fork). It
//! forks only while single-threaded, with every signal blocked, and the child resets
//! what the master installed before it does anything else (see [`sys`]). The child
//! side is a callback supplied by the `ferricorn` package, so this crate does not
//! link the worker or Python.

mod activation;
mod arbiter;
mod listeners;
mod metrics;
mod notify;
mod pidfile;
mod sys;
mod unix_socket;
pub mod upgrade;
mod worker_table;

pub use activation::take_activated;
pub use arbiter::{
    hold_signals, run, ChildStart, ForkHooks, Hooks, MasterEvents, ReloadFn, SpawnFn,
};
pub use listeners::{
    apply_options, bind_all, claim_unix_files, defers_accepts, match_binds, BindError, BindOptions,
    Listener,
};
pub use notify::Notifier;
pub use pidfile::{Pidfile, PidfileError};
pub use unix_socket::Made;
pub use upgrade::{take_inherited, Inherited, StartInfo};
