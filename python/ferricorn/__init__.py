"""ferricorn: a prefork HTTP server for WSGI apps, with a documented signal and
exit-status contract. Run it as ``ferricorn MODULE:CALLABLE`` (or ``python -m
ferricorn``); the server itself is Rust, in ``ferricorn._native``."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("ferricorn")
except PackageNotFoundError:  # run from a source tree
    __version__ = "unknown"
