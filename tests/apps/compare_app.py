"""The one app tests/it/compare.rs serves with ferricorn, gunicorn and waitress.

Standard library only, so every server loads exactly the same thing.
"""

import os
import time


def say(line):
    """One line to stderr in one write(2), so workers' lines never interleave."""
    os.write(2, f"{line}\n".encode())


# tests/it/compare.rs counts these lines to know every worker has loaded the app
# (gunicorn's workers install their signal handlers just before loading it).
say(f"compare: app loaded in {os.getpid()}")


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        # tests/it/compare.rs waits for this line to know the request is in flight.
        say(f"compare: slow request started in {os.getpid()}")
        time.sleep(2)
        body = b"slow done"
    elif environ["PATH_INFO"] == "/":
        body = b"ok"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
