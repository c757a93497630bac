"""Importing this module fails, as an app with a missing dependency does."""

import a_module_that_does_not_exist  # noqa: F401


def app(environ, start_response):
    raise AssertionError("never reached")
