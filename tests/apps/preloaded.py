"""Says where it was imported, and draws a random number at import and per worker."""

import os
import random
import sys

print(f"imported in {os.getpid()}", file=sys.stderr, flush=True)
AT_IMPORT = random.random()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getpid()} {AT_IMPORT} {random.random()}".encode()]
