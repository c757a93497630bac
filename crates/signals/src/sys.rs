//! The only code in ferricorn that installs signal handlers.
//!
//! A handler records the signal (a counter per signal and the sender's pid) and
//! writes one byte to a non-blocking pipe; the event loop polls the pipe's read end
//! and calls [`SelfPipe::drain`]. Nothing else happens inside a handler, with one
//! deliberate exception: [`install_exit_now`], whose handler is `_exit` and so does
//! what the default action would, without a core file.
//!
//! Why not signal-hook: its process-global registry survives `fork` and keeps
//! believing its handlers are installed after the child resets them to `SIG_DFL`,
//! so a worker could not re-register them. Owning the ~100 lines keeps the
//! fork-time reset exact.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{self, Pid};

use crate::policy::Exit;

const NSIG: usize = 65;

/// Write end of the active self-pipe, or -1.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// How many times each signal arrived since the last drain.
static PENDING: [AtomicU32; NSIG] = [const { AtomicU32::new(0) }; NSIG];
/// The pid that sent each signal most recently (from siginfo), 0 if unknown.
static SENDER: [AtomicI32; NSIG] = [const { AtomicI32::new(0) }; NSIG];
/// The status `_exit` uses in the exit-now handler.
static EXIT_NOW_CODE: AtomicI32 = AtomicI32::new(0);

/// One signal as the loop sees it after a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub signal: Signal,
    /// How many times it arrived since the last drain (signals of one kind coalesce).
    pub count: u32,
    /// The sending process, when the kernel said (`si_pid`).
    pub sender: Option<Pid>,
}

/// Handlers for a set of signals, wired to a pipe an event loop can poll.
#[derive(Debug)]
pub struct SelfPipe {
    read: OwnedFd,
    write: OwnedFd,
    signals: Vec<Signal>,
}

impl SelfPipe {
    /// Install handlers for `signals`. Only one `SelfPipe` may be live per process.
    pub fn install(signals: &[Signal]) -> io::Result<SelfPipe> {
        let (read, write) = unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        for &s in signals {
            PENDING[s as usize].store(0, Ordering::SeqCst);
            set_handler(s, SigHandler::SigAction(record_and_wake))?;
        }
        Ok(SelfPipe {
            read,
            write,
            signals: signals.to_vec(),
        })
    }

    /// The fd to register for readability with the event loop.
    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Empty the pipe, then collect what arrived. Emptying first means a signal that
    /// lands in between costs a spurious wake-up, never a lost signal.
    pub fn drain(&self) -> Vec<Delivered> {
        let mut buf = [0u8; 64];
        while matches!(unistd::read(self.read.as_fd(), &mut buf), Ok(n) if n > 0) {}
        let mut out = Vec::new();
        for &s in &self.signals {
            let count = PENDING[s as usize].swap(0, Ordering::SeqCst);
            if count > 0 {
                let pid = SENDER[s as usize].load(Ordering::SeqCst);
                out.push(Delivered {
                    signal: s,
                    count,
                    sender: (pid > 0).then(|| Pid::from_raw(pid)),
                });
            }
        }
        out
    }

    /// Whether `signal` arrived and is not drained yet (a peek: the loop still sees it).
    pub fn is_pending(&self, signal: Signal) -> bool {
        PENDING[signal as usize].load(Ordering::SeqCst) > 0
    }

    /// In a freshly forked child: put every handled signal back to `SIG_DFL` and
    /// close the pipe, so nothing the parent set up can run or be written to here.
    pub fn reset_in_child(self) {
        WAKE_FD.store(-1, Ordering::SeqCst);
        for &s in &self.signals {
            let _ = set_handler(s, SigHandler::SigDfl);
            PENDING[s as usize].store(0, Ordering::SeqCst);
        }
        drop(self.read);
        drop(self.write);
    }
}

/// Signals whose handlers a process forked by the app must not keep.
static RESET_AFTER_FORK: [AtomicBool; NSIG] = [const { AtomicBool::new(false) }; NSIG];

/// In a worker: every process the app forks (`os.fork`, multiprocessing's fork
/// start method) starts with `signals` back at `SIG_DFL`. Otherwise such a child
/// would inherit this worker's handlers: a TERM meant for it would only be
/// written to the worker's pipe, the worker would begin a stop it was never
/// sent, and the child would not die (`Pool.terminate()` would hang).
pub fn reset_in_app_forks(signals: &[Signal]) -> io::Result<()> {
    for &s in signals {
        RESET_AFTER_FORK[s as usize].store(true, Ordering::SeqCst);
    }
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if REGISTERED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    // SAFETY: registers a plain function; the child handler only calls
    // sigaction(2), which is async-signal-safe, and touches atomics.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

extern "C" fn after_fork_in_child() {
    WAKE_FD.store(-1, Ordering::SeqCst);
    for (i, reset) in RESET_AFTER_FORK.iter().enumerate() {
        if reset.load(Ordering::SeqCst) {
            if let Ok(s) = Signal::try_from(i as i32) {
                let _ = set_handler(s, SigHandler::SigDfl);
            }
        }
    }
}

/// Install a handler that ends the process at once with `code` (used by workers for
/// quick-stop signals: the loop may be inside the app for seconds, so a recorded
/// signal would not cut the request as a quick stop promises).
pub fn install_exit_now(signals: &[Signal], code: u8) -> io::Result<()> {
    EXIT_NOW_CODE.store(i32::from(code), Ordering::SeqCst);
    for &s in signals {
        set_handler(s, SigHandler::Handler(exit_now))?;
    }
    Ok(())
}

/// Block every signal; returns the previous mask. Used around `fork` so that no
/// handler of the parent runs in the child before the child has reset them.
pub fn block_all() -> io::Result<SigSet> {
    let mut old = SigSet::empty();
    signal::sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    Ok(old)
}

/// Set the signal mask back (parent after fork) or to empty (child after its reset).
pub fn set_mask(mask: &SigSet) -> io::Result<()> {
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None)?;
    Ok(())
}

/// End the process as `exit` says. "Die by the signal": restore `SIG_DFL`, unblock,
/// raise. The kernel ignores a default-action signal sent to PID 1, so as PID 1
/// (and if raising somehow returns) exit with 128+n instead.
pub fn exit_with(exit: Exit) -> ! {
    if let Exit::Signal(sig) = exit {
        if unistd::getpid().as_raw() != 1 {
            // SIGQUIT's default action also dumps core; this is a deliberate exit,
            // not a crash, so it must not leave a core file or read "core dumped".
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            let _ = set_handler(sig, SigHandler::SigDfl);
            let mut only = SigSet::empty();
            only.add(sig);
            let _ = signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
            let _ = signal::raise(sig);
        }
    }
    std::process::exit(i32::from(exit.shell_status()))
}

fn set_handler(s: Signal, handler: SigHandler) -> io::Result<()> {
    // SA_RESTART: blocking syscalls elsewhere (std's accept/read) retry instead of
    // failing with EINTR; the loop is woken by the pipe, not by EINTR.
    let action = SigAction::new(handler, SaFlags::SA_RESTART, SigSet::empty());
    // SAFETY: both handlers in this module only touch atomics and call
    // async-signal-safe functions (write, _exit); SIG_DFL is always safe.
    unsafe { signal::sigaction(s, &action) }?;
    Ok(())
}

/// # Safety
/// Called by the kernel as a signal handler: uses only atomics and `write(2)`, and
/// saves and restores `errno` so the interrupted code never sees it change.
extern "C" fn record_and_wake(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if let Ok(i) = usize::try_from(sig) {
        if i < NSIG {
            if !info.is_null() {
                // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
                let pid = unsafe { (*info).si_pid() };
                SENDER[i].store(pid, Ordering::SeqCst);
            }
            PENDING[i].fetch_add(1, Ordering::SeqCst);
        }
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe (EAGAIN) already means a
        // wake-up is pending, so the result is deliberately ignored.
        let _ = unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
    set_errno(errno);
}

extern "C" fn exit_now(_sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe and runs no destructors or atexit hooks.
    unsafe { libc::_exit(EXIT_NOW_CODE.load(Ordering::SeqCst)) }
}

fn set_errno(value: i32) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for writes.
    unsafe { *libc::__errno_location() = value };
}
