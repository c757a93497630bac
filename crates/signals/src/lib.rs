//! What each signal does to ferricorn, and how the process then exits.
//!
//! This crate is the single source of truth for ferricorn's signal contract:
//! - [`policy`]: signal → [`Action`] → [`ExitRule`], pure data, table-tested;
//! - [`closing`]: how a stop stops listening without resetting queued connections;
//! - [`exit_code`]: the numbers ferricorn exits with, shared by master and workers;
//! - [`sys`]: the only code that touches signal dispositions — a self-pipe that
//!   turns signals into readable bytes for an event loop, the fork-time reset, and
//!   "die by this signal".
//!
//! Handlers never act: they record the signal and wake the loop (see `sys`).

pub mod closing;
pub mod exit_code;
pub mod listening;
pub mod policy;
pub mod report;
pub mod scoreboard;
pub mod sys;
pub mod title;

pub use listening::{ListenAddr, Listening};
pub use nix::sys::signal::Signal;
pub use policy::{
    parse_signal, Action, Exit, ExitRule, Override, ParseExitRuleError, Policy, Preset, StopMode,
};
pub use report::Report;
pub use sys::{exit_with, Delivered, SelfPipe};
