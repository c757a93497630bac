"""ferricorn: a prefork HTTP server for WSGI apps, with a documented signal and
exit-status contract. Run it as ``ferricorn MODULE:CALLABLE`` (or ``python -m
ferricorn``); the server itself is Rust, in ``ferricorn._native``.

Kept to nothing at import: this package is imported by the master, whose memory
every worker shares. While ferricorn serves, ``ferricorn.ClientDisconnected`` is the
error ``wsgi.input`` raises when the client goes away in the middle of a body."""


def __getattr__(name):
    if name == "__version__":
        from ferricorn._native import __version__

        return __version__
    raise AttributeError("module 'ferricorn' has no attribute %r" % name)
