"""Records every request it sees (one stderr line each), so a test can prove that
a smuggled request never reached the app."""

import sys


def app(environ, start_response):
    print(f"app saw {environ['REQUEST_METHOD']} {environ['PATH_INFO']}", file=sys.stderr, flush=True)
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
