"""Responses the app makes as it goes (tests/it/streaming.rs): sleeping
generators, write(), an endless stream, SSE from Flask and Django, and a fast
and a slow answer for pipelining. Each stream logs on stderr when its iterable is
closed, so a test can see the generator's `finally` run."""

import sys
import time


def log(message):
    print(message, file=sys.stderr, flush=True)


def blocks(environ, start_response):
    """`?N,GAP`: N blocks, GAP seconds apart; each says when it was made."""
    n, gap = environ["QUERY_STRING"].split(",")
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        try:
            for i in range(int(n)):
                if i:
                    time.sleep(float(gap))
                yield b"block %d\n" % i
        finally:
            log("blocks closed")

    return gen()


def big_then_small(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def gen():
        yield b"x" * 70_000 + b"\n"
        for i in range(3):
            time.sleep(0.4)
            yield b"event %d\n" % i

    return gen()


def writes(environ, start_response):
    """The legacy write(): `first` must not wait for the app to return."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"first\n")
    time.sleep(1)
    return [b"second\n"]


def endless_writes(environ, start_response):
    """write() every 0.2 s until the client leaves; says what write() raised."""
    import ferricorn

    write = start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        while True:
            write(b"written\n")
            time.sleep(0.2)
    except ferricorn.ClientDisconnected as e:
        log("write() raised ClientDisconnected: %s" % e)
        raise


def endless(environ, start_response):
    """A tick every 0.2 s until the client leaves."""
    start_response("200 OK", [("Content-Type", "text/event-stream")])

    def gen():
        ticks = 0
        try:
            while True:
                yield b"data: tick %d\n\n" % ticks
                ticks += 1
                time.sleep(0.2)
        finally:
            log("endless stream closed after %d ticks" % ticks)

    return gen()


def many(environ, start_response):
    """4 MiB in 1 KiB blocks, made as fast as asked for."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    block = b"y" * 1024
    return (block for _ in range(4096))


def fast(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"fast\n"]


def slow(environ, start_response):
    time.sleep(1.5)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"slow\n"]


ROUTES = {
    "/blocks": blocks,
    "/big-then-small": big_then_small,
    "/write": writes,
    "/endless": endless,
    "/endless-writes": endless_writes,
    "/many": many,
    "/fast": fast,
    "/slow": slow,
}


def app(environ, start_response):
    return ROUTES[environ["PATH_INFO"]](environ, start_response)


def create_flask():
    from flask import Flask, Response

    flask = Flask(__name__)

    @flask.get("/sse")
    def sse():
        def events():
            for i in range(4):
                if i:
                    time.sleep(0.5)
                yield "data: event %d\n\n" % i

        return Response(events(), mimetype="text/event-stream")

    return flask


def create_django():
    import one_file_django

    return one_file_django.application(__name__)


def _django_lines(request):
    from django.http import StreamingHttpResponse

    def lines():
        for i in range(4):
            if i:
                time.sleep(0.5)
            yield "line %d\n" % i

    return StreamingHttpResponse(lines(), content_type="text/plain")


def __getattr__(name):
    if name == "urlpatterns":
        from django.urls import path

        return [path("lines/", _django_lines)]
    raise AttributeError(name)
