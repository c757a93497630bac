"""gunicorn server hooks from a gunicorn.conf.py, with stand-ins for the objects
gunicorn passes them (server, worker, req, resp): the attributes hooks commonly
read, nothing that would pretend to be gunicorn's internals."""

import logging
import os
import sys
import types

log = logging.getLogger("gunicorn.error")
if not log.handlers:
    _h = logging.StreamHandler(sys.stderr)
    _h.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"))
    log.addHandler(_h)
    log.setLevel(logging.INFO)


def load(path, names, age, master_pid, workers):
    namespace = {"__file__": path, "__name__": "__config__"}
    with open(path, "rb") as f:
        exec(compile(f.read(), path, "exec"), namespace)
    hooks = {n: namespace[n] for n in names if callable(namespace.get(n))}
    server = types.SimpleNamespace(pid=master_pid, log=log, num_workers=workers)
    worker = types.SimpleNamespace(pid=os.getpid(), ppid=master_pid, age=age, log=log, alive=True)
    return hooks, server, worker


class Request:
    def __init__(self, method, uri, version, headers):
        self.method = method
        self.uri = uri
        self.path, _, self.query = uri.partition("?")
        self.version = version
        # As gunicorn: (NAME, value) with upper-cased names.
        self.headers = headers


class Response:
    def __init__(self, status, headers):
        self.status = status
        self.status_code = int(status.split(" ", 1)[0]) if status else None
        self.headers = headers


def run_master_hook(path, name, master_pid, workers, *extra):
    """For the master's hooks, run in a child Python (the master runs none).
    child_exit gets the reaped worker's pid and id (gunicorn's age); nworkers_changed
    the new count and the old one ("" the first time: None)."""
    hooks, server, worker = load(path, [name], 0, master_pid, workers)
    if name == "child_exit":
        worker.pid, worker.age, worker.alive = int(extra[0]), int(extra[1]), False
        hooks[name](server, worker)
    elif name == "nworkers_changed":
        hooks[name](server, int(extra[0]), int(extra[1]) if extra[1] else None)
    else:
        hooks[name](server)
