"""Flask and Django apps whose code imports the stdlib's C extensions: what broke
when the stdlib came from another kind of CPython build than the one running."""

import ctypes
import json
import math
import pyexpat
import socket
import sqlite3
import ssl
import zlib


def facts():
    """One `name=value` line per module, each computed by that module."""
    db = sqlite3.connect(":memory:")
    found = {
        "math": math.sqrt(16),
        "sqlite3": db.execute("select 40 + 2").fetchone()[0],
        "zlib": zlib.decompress(zlib.compress(b"ferricorn")).decode(),
        "ssl": ssl.OPENSSL_VERSION.split()[0],
        "ctypes": ctypes.sizeof(ctypes.c_int32),
        "pyexpat": pyexpat.EXPAT_VERSION.split("_")[0],
        "socket": socket.AF_INET == 2,
        "json": json.dumps([1]),
    }
    return "".join("%s=%s\n" % kv for kv in found.items())


def create_flask():
    from flask import Flask

    app = Flask(__name__)

    @app.route("/")
    def index():
        return facts(), {"Content-Type": "text/plain"}

    return app


def create_django():
    import one_file_django

    return one_file_django.application(__name__)


def _django_index(request):
    from django.http import HttpResponse

    return HttpResponse(facts(), content_type="text/plain")


def __getattr__(name):
    # Django reads ROOT_URLCONF's urlpatterns only once it is set up.
    if name == "urlpatterns":
        from django.urls import path

        return [path("", _django_index)]
    raise AttributeError(name)
