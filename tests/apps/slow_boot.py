"""Importing this module takes far longer than any boot timeout in the tests."""

import time

time.sleep(60)


def app(environ, start_response):
    start_response("200 OK", [])
    return [b"booted"]
