"""A small app with one route per behaviour the integration tests check."""

import json
import os
import sys
import time

import ferricorn  # ferricorn's own module, for ClientDisconnected


def app(environ, start_response):
    path = environ["PATH_INFO"]
    route = ROUTES.get(path)
    if route is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    return route(environ, start_response)


def hello(environ, start_response):
    body = b"Hello, World!\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def echo(environ, start_response):
    # An explicit size: wsgiref.validate (tests/apps/validated.py) insists on one.
    length = environ.get("CONTENT_LENGTH")
    body = environ["wsgi.input"].read(int(length) if length else -1)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def slow(environ, start_response):
    seconds = float(environ.get("QUERY_STRING") or "2")
    # tests/it wait for this line to know the request is in flight.
    print(f"slow request started in {os.getpid()}", file=sys.stderr, flush=True)
    time.sleep(seconds)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slow done\n"]


def error(environ, start_response):
    raise RuntimeError("boom from the test app")


def env(environ, start_response):
    keep = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
    body = json.dumps(keep, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        for i in range(5):
            yield b"x" * 30000 + b"\n"

    return gen()


def python(environ, start_response):
    info = {"version": sys.version.split()[0], "prefix": sys.prefix, "executable": sys.executable, "path": sys.path}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(info).encode()]


def modules(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(sorted(sys.modules)).encode()]


def import_module(environ, start_response):
    """Import the module named by the query string and return its MESSAGE."""
    import importlib

    module = importlib.import_module(environ["QUERY_STRING"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [module.MESSAGE.encode()]


def native(environ, start_response):
    """Import the extension modules named by the query string (comma-separated):
    their files, and every libpython this process has mapped."""
    import importlib

    names = environ["QUERY_STRING"].split(",")
    files = {name: getattr(importlib.import_module(name), "__file__", "built-in") for name in names}
    with open("/proc/self/maps") as maps:
        libpython = sorted({line.split()[-1] for line in maps if "libpython" in line})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"files": files, "libpython": libpython}).encode()]


class Closing:
    """An iterable whose close() must be called exactly once."""

    closed = 0

    def __iter__(self):
        yield b"closing"

    def close(self):
        Closing.closed += 1


def closing(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing()


def closed_count(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(Closing.closed).encode()]


ROUTES = {
    "/": hello,
    "/echo": echo,
    "/pid": pid,
    "/slow": slow,
    "/error": error,
    "/env": env,
    "/stream": stream,
    "/python": python,
    "/modules": modules,
    "/import": import_module,
    "/native": native,
    "/closing": closing,
    "/closed-count": closed_count,
}


def spin(environ, start_response):
    """Busy Python code that never returns (a hung request)."""
    print(f"spin request started in {os.getpid()}", file=sys.stderr, flush=True)
    n = 0
    while True:
        n += 1


ROUTES["/spin"] = spin


def exit3(environ, start_response):
    """End the worker process with status 3, as a broken extension might."""
    os._exit(3)


ROUTES["/exit3"] = exit3


def ids(environ, start_response):
    """The worker's uid, gid and umask."""
    mask = os.umask(0)
    os.umask(mask)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getuid()} {os.getgid()} {mask:o}".encode()]


ROUTES["/ids"] = ids


def groups(environ, start_response):
    """The worker's uid, gid and supplementary groups."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    listed = ",".join(str(g) for g in sorted(set(os.getgroups())))
    return [f"{os.getuid()} {os.getgid()} {listed}".encode()]


ROUTES["/groups"] = groups


def osenv(environ, start_response):
    """The worker process's environment variable named by the query string."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [os.environ.get(environ["QUERY_STRING"], "<unset>").encode()]


ROUTES["/osenv"] = osenv


def say(environ, start_response):
    """Print to stdout, as apps do."""
    print("printed by the app", flush=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"said"]


ROUTES["/say"] = say


def inject(environ, start_response):
    """A response header value with CR LF: must become a 500, never a second header."""
    start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: stolen=1")])
    return [b"never sent"]


def no_content(environ, start_response):
    """204 with a body the app should not have produced: no body goes out."""
    start_response("204 No Content", [])
    return [b"this must not be sent"]


ROUTES["/inject"] = inject
ROUTES["/nocontent"] = no_content


def hop(environ, start_response):
    """A framing header from the app: it would corrupt the response."""
    start_response("200 OK", [("Transfer-Encoding", "chunked")])
    return [b"never sent"]


def returns_none(environ, start_response):
    start_response("200 OK", [])
    return None


def returns_str(environ, start_response):
    start_response("200 OK", [])
    return "text, not bytes"


def exits(environ, start_response):
    raise SystemExit(0)


ROUTES["/hop"] = hop


def exc_info_route(environ, start_response):
    """start_response called again (PEP 3333): without exc_info it raises; with
    exc_info and a bad header it raises and keeps the first status and headers;
    with exc_info and good ones (unless ?keep) it replaces them."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
    raised = []
    try:
        start_response("202 Accepted", [("X-Again", "1")])
    except RuntimeError:
        raised.append("RuntimeError")
    try:
        raise KeyError("oops")
    except KeyError:
        info = sys.exc_info()
    try:
        start_response("203 Bad", [("X-Bad", "a\r\nb")], info)
    except ValueError:
        raised.append("ValueError")
    if environ["QUERY_STRING"] != "keep":
        start_response("500 Internal Server Error", [("Content-Type", "text/plain"), ("X-Second", "2")], info)
    return [" ".join(raised).encode()]


ROUTES["/exc-info"] = exc_info_route
ROUTES["/none"] = returns_none
ROUTES["/str"] = returns_str
ROUTES["/exit"] = exits


def file(environ, start_response):
    """wsgi.file_wrapper over a regular file, from an offset (query: offset,limit)."""
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"ferricorn-file-{os.getpid()}.bin")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(bytes(i % 251 for i in range(300_000)))
    offset, _, limit = environ["QUERY_STRING"].partition(",")
    f = open(path, "rb")
    f.seek(int(offset or 0))
    headers = [("Content-Type", "application/octet-stream")]
    if limit:
        headers.append(("Content-Length", limit))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](f, 8192)


def filelike(environ, start_response):
    """wsgi.file_wrapper over something that is not a file: iterated instead."""
    import io

    start_response("200 OK", [("Content-Type", "text/plain")])
    return environ["wsgi.file_wrapper"](io.BytesIO(b"not a real file" * 1000), 100)


def big(environ, start_response):
    """16 MiB of a known pattern, more than a socket holds: as one bytes object
    (default), through wsgi.file_wrapper (?file), or without a Content-Length
    from a generator of large and small pieces, chunked (?chunked), or as a list
    of those pieces (?list)."""
    import tempfile

    kind = environ["QUERY_STRING"]
    size = 16 << 20
    data = (bytes(range(251)) * (size // 251 + 1))[:size]
    headers = [("Content-Type", "application/octet-stream")]
    if kind == "chunked":
        start_response("200 OK", headers)
        return big_pieces(data)
    headers.append(("Content-Length", str(size)))
    start_response("200 OK", headers)
    if kind == "file":
        path = os.path.join(tempfile.gettempdir(), f"ferricorn-big-{os.getpid()}.bin")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
        return environ["wsgi.file_wrapper"](open(path, "rb"))
    if kind == "list":
        return [data[a:b] for a, b in zip(BIG_CUTS, BIG_CUTS[1:])]
    return [data]


BIG_CUTS = [0, 10, 5 << 20, (5 << 20) + 10, 9 << 20, (9 << 20) + 100, 16 << 20]


def big_pieces(data):
    """Pieces of `data`, large and small; says on stderr how the generator ended."""
    done = False
    try:
        for a, b in zip(BIG_CUTS, BIG_CUTS[1:]):
            yield data[a:b]
        done = True
    finally:
        how = "after the last piece" if done else "early"
        print(f"big generator closed {how} in {os.getpid()}", file=sys.stderr, flush=True)


ROUTES["/big"] = big
ROUTES["/file"] = file
ROUTES["/filelike"] = filelike


def first_line(environ, start_response):
    """Answer with the body's first line without reading the rest (a streamed body)."""
    line = environ["wsgi.input"].readline()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [line]


def read_all(environ, start_response):
    """Read the body to its end in pieces; log how it ended (for client-failure tests)."""
    stream = environ["wsgi.input"]
    total = 0
    try:
        while True:
            piece = stream.read(10000)
            if not piece:
                break
            total += len(piece)
    except ferricorn.ClientDisconnected as e:
        print(f"body read failed after {total} bytes: ClientDisconnected (caught by name): {e}", file=sys.stderr, flush=True)
        raise
    except OSError as e:
        print(f"body read failed after {total} bytes: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(total).encode()]


def lines(environ, start_response):
    """The lengths of the body's lines, by iteration, readline(n) and readlines()."""
    stream = environ["wsgi.input"]
    how = environ["QUERY_STRING"]
    if how == "iter":
        got = [len(line) for line in stream]
    elif how == "readlines":
        got = [len(line) for line in stream.readlines()]
    else:
        got = []
        while True:
            line = stream.readline(int(how))
            if not line:
                break
            got.append(len(line))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(got).encode()]


def wait_then_echo(environ, start_response):
    """Sleep (seconds in the query string) before the first read of the body."""
    time.sleep(float(environ["QUERY_STRING"] or "1"))
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


ROUTES["/first-line"] = first_line
ROUTES["/read-all"] = read_all
ROUTES["/lines"] = lines
ROUTES["/wait-then-echo"] = wait_then_echo


def fork_child(environ, start_response):
    """os.fork() in a request: the child exits with 7 and the app reaps it itself."""
    child = os.fork()
    if child == 0:
        os._exit(7)
    _, status = os.waitpid(child, 0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.waitstatus_to_exitcode(status)).encode()]


def subprocess_fds(environ, start_response):
    """What a program the app runs inherits: its open fds, and its signal dispositions."""
    import subprocess

    out = subprocess.run(
        ["sh", "-c", "ls -l /proc/$$/fd; grep -E '^Sig(Ign|Cgt)' /proc/$$/status"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [out.encode()]


def pool_terminate(environ, start_response):
    """multiprocessing (fork start method): map, then terminate() the pool with SIGTERM."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(2)
    squares = pool.map(abs, [-1, -2, -3])
    started = time.monotonic()
    pool.terminate()
    pool.join()
    took = time.monotonic() - started
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"squares": squares, "terminate_seconds": took}).encode()]


TICKS = []


def start_ticker(environ, start_response):
    """Start a background thread that ticks every 10 ms (once per worker)."""
    import threading

    if not TICKS:
        TICKS.append(0)

        def tick():
            while True:
                TICKS[0] += 1
                time.sleep(0.01)

        threading.Thread(target=tick, daemon=True).start()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"started"]


def ticks(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(TICKS[0] if TICKS else -1).encode()]


ROUTES["/fork-child"] = fork_child
ROUTES["/subprocess-fds"] = subprocess_fds
ROUTES["/pool-terminate"] = pool_terminate
ROUTES["/start-ticker"] = start_ticker
ROUTES["/ticks"] = ticks


def fork_term(environ, start_response):
    """Fork a child that sleeps, TERM it, and report how it ended (within 3 s)."""
    import signal

    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    time.sleep(0.1)
    os.kill(child, signal.SIGTERM)
    ended = "still alive after TERM"
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            ended = f"exit {os.waitstatus_to_exitcode(status)}"
            break
        time.sleep(0.02)
    else:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [ended.encode()]


ROUTES["/fork-term"] = fork_term


KEPT = []


def keep_start_response(environ, start_response):
    """Keep start_response past the request; say whether this one is a kept one."""
    reused = any(k is start_response for k in KEPT)
    KEPT.append(start_response)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"reused" if reused else b"fresh"]


ROUTES["/keep-start-response"] = keep_start_response

KEPT_WRITES = []


def keep_write(environ, start_response):
    """Keep only the write() start_response returns; say whether its owner was seen."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    reused = any(w.__self__ is write.__self__ for w in KEPT_WRITES)
    KEPT_WRITES.append(write)
    return [b"reused" if reused else b"fresh"]


ROUTES["/keep-write"] = keep_write

KEPT_INPUTS = []


def keep_input(environ, start_response):
    """Keep wsgi.input unread; answer whether this one was kept before, and the
    body the one kept last time still reads."""
    body = environ["wsgi.input"]
    reused = any(k is body for k in KEPT_INPUTS)
    earlier = KEPT_INPUTS[-1].read() if KEPT_INPUTS else b"-"
    KEPT_INPUTS.append(body)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"reused " if reused else b"fresh ", earlier]


ROUTES["/keep-input"] = keep_input


def start_response_gc(environ, start_response):
    """Whether the cyclic collector can see start_response's object (it and
    its write() refer to each other)."""
    import gc

    write = start_response("200 OK", [("Content-Type", "text/plain")])
    seen = any(r is write for r in gc.get_referents(write.__self__))
    return [b"tracked" if seen else b"untracked"]


ROUTES["/start-response-gc"] = start_response_gc


def thread_id(environ, start_response):
    """Which thread of the worker serves this connection (with --threads)."""
    import threading

    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(threading.get_ident()).encode()]


ROUTES["/thread-id"] = thread_id
