"""`ferricorn` and `python -m ferricorn`: check that this interpreter can run
ferricorn, then hand the process to its Rust core, which never returns.

This is the only Python the master runs: the core reads the interpreter's facts
and from then on runs none (workers are forks of this process)."""

import os
import signal
import sys

# First, before anything slow: a signal sent while ferricorn starts waits until the
# core has installed its handlers (it lets them in once it knows the signal policy),
# instead of meeting its default action (HUP would kill the master).
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH})


def main():
    problem = _unsupported()
    if problem is None:
        try:
            from ferricorn import _native
        except ImportError as e:
            problem = _cannot_load(e)
    if problem is not None:
        sys.stderr.write("Error: %s\n" % problem)
        sys.exit(1)
    if os.path.basename(sys.argv[0]) == "__main__.py":  # python -m ferricorn
        argv = ["ferricorn"] + sys.argv[1:]
        if hasattr(sys, "orig_argv"):  # keeps the interpreter's own options (-X ...)
            restart = [sys.executable] + sys.orig_argv[1:]
        else:
            restart = [sys.executable, "-m", "ferricorn"] + sys.argv[1:]
    else:
        # The script itself: an upgrade (USR2) then starts whatever ferricorn is
        # installed at this path by then.
        script = os.path.abspath(sys.argv[0])
        argv = [script] + sys.argv[1:]
        restart = list(argv)
    _native.main(argv, restart)


def _interpreter():
    return "CPython %s (%s)" % (
        ".".join(str(n) for n in sys.version_info[:3]),
        sys.executable,
    )


def _unsupported():
    """Why this interpreter cannot run ferricorn at all, or None. (Cheap checks
    only: what this imports stays in the master for good.)"""
    if sys.implementation.name != "cpython":
        return "ferricorn runs on CPython only, and %s is %s" % (
            sys.executable,
            sys.implementation.name,
        )
    if "t" in getattr(sys, "abiflags", ""):
        return (
            "%s is a free-threaded build; ferricorn needs the GIL build of CPython"
            % _interpreter()
        )
    return None


def _cannot_load(error):
    """One line: why the extension module does not load here."""
    here = os.path.dirname(os.path.abspath(__file__))
    built = sorted(n for n in os.listdir(here) if n.startswith("_native."))
    if not built:
        return "ferricorn's extension module is missing from %s (%s); reinstall ferricorn" % (
            here,
            error,
        )
    tag = "cpython-%d%d-" % sys.version_info[:2]
    if not any(tag in n for n in built):
        return (
            "ferricorn in %s is built for another Python (%s), but runs on %s; "
            "reinstall it for this interpreter (pip install --force-reinstall ferricorn), "
            "or recreate the virtualenv" % (here, ", ".join(built), _interpreter())
        )
    return "cannot load ferricorn's extension module on %s: %s" % (_interpreter(), error)


if __name__ == "__main__":
    main()
