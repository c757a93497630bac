"""The WSGI app every server runs in bench/run: one route per workload."""

import os
import time

HELLO = b"Hello, World!\n"
MIB = b"x" * (1 << 20)
FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "1mib.bin")


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "14")])
    return [HELLO]


def mib(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(MIB)))])
    return [MIB]


def mib_file(environ, start_response):
    f = open(FILE, "rb")
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(1 << 20))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, 1 << 16)
    return iter(lambda: f.read(1 << 16), b"")


def echo(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))])
    return [body]


def sleep10(environ, start_response):
    time.sleep(0.010)
    return hello(environ, start_response)


BLOCK = b"x" * 1024


def stream100(environ, start_response):
    """A generator of 100 blocks of 1 KiB, no Content-Length: streamed."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return (BLOCK for _ in range(100))


def sse50(environ, start_response):
    """An endless event stream: 1 KiB every 50 ms, each stamped with the time it was made."""
    start_response("200 OK", [("Content-Type", "text/event-stream")])

    def events():
        while True:
            stamp = b"data: %.6f " % time.time()
            yield stamp + b"x" * (1022 - len(stamp)) + b"\n\n"
            time.sleep(0.05)

    return events()


ROUTES = {"/": hello, "/1mib": mib, "/1mib-file": mib_file, "/echo": echo, "/sleep10": sleep10,
          "/stream100": stream100,
          "/sse50": sse50}


def app(environ, start_response):
    return ROUTES.get(environ["PATH_INFO"], hello)(environ, start_response)
