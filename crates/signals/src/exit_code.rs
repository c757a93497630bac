//! Exit statuses, defined once. `docs/exit-codes.md` documents each one.
//!
//! 3 and 4 keep gunicorn's meaning so that scripts written for gunicorn read them alike.

/// A setting has a bad value, or a config source cannot be read. Nothing was bound.
pub const CONFIG_ERROR: u8 = 1;
/// The command line itself is malformed (clap's own exit code for usage errors).
pub const USAGE_ERROR: u8 = 2;
/// A worker could not boot for a reason other than the app (Python could not start,
/// the virtualenv does not match, the app directory is missing). As gunicorn.
pub const WORKER_BOOT_FAILED: u8 = 3;
/// The app could not be imported or is not callable. As gunicorn.
pub const APP_LOAD_FAILED: u8 = 4;
/// A listening socket could not be bound.
pub const BIND_FAILED: u8 = 5;
/// Workers kept dying before they were ready and none became ready within the
/// boot deadline: the master gave up rather than loop forever.
pub const CRASH_LOOP: u8 = 6;
/// A graceful stop's deadline (`--graceful-timeout`) passed and workers still busy
/// were killed: the stop was not clean, whatever the signal's exit rule says.
pub const DRAIN_DEADLINE_EXCEEDED: u8 = 7;
/// The master itself failed (an unexpected OS error in its loop).
pub const MASTER_FAILED: u8 = 70;
