#!/usr/bin/env python3
"""Print the expectations of the gunicorn request fixtures as plain lines.

Usage: corpus_expect.py CORPUS_DIR

The fixture `.py` files are Python that imports gunicorn; gunicorn is not
needed (or installed): tiny stand-ins for `gunicorn.config.Config` (records
`cfg.set` calls) and `gunicorn.http.errors` (any name is an exception class)
are registered before each file is executed with `cfg` and `uri` predefined.

Output, one record per line, byte strings hex-encoded (str values are
encoded as latin-1, the WSGI convention the fixtures use):

    FIXTURE <valid|invalid> <name>
    CFG <setting> <value as hex of repr()>
    ERROR <exception class name>                 (invalid fixtures)
    REQ                                          (valid: one per request)
    METHOD <hex> / URI <hex> / VERSION <major> <minor>
    HEADER <hex name> <hex value>
    BODY <hex>
    TRAILERS                                     (only when given)
    TRAILER <hex name> <hex value>
    END
"""

import os
import sys
import types


class Config:
    def __init__(self):
        self.settings = []

    def set(self, name, value):
        self.settings.append((name, value))


def errors_getattr(name):
    if name.startswith("__"):
        raise AttributeError(name)
    cls = type(name, (Exception,), {})
    setattr(errors, name, cls)
    return cls


gunicorn = types.ModuleType("gunicorn")
config = types.ModuleType("gunicorn.config")
config.Config = Config
http = types.ModuleType("gunicorn.http")
errors = types.ModuleType("gunicorn.http.errors")
errors.__getattr__ = errors_getattr
gunicorn.config, gunicorn.http, http.errors = config, http, errors
for mod in (gunicorn, config, http, errors):
    sys.modules[mod.__name__] = mod


def hexed(value):
    if isinstance(value, str):
        value = value.encode("latin-1")
    return value.hex()


def main(corpus):
    for kind in ("valid", "invalid"):
        directory = os.path.join(corpus, kind)
        for fname in sorted(os.listdir(directory)):
            if not fname.endswith(".py"):
                continue
            name = fname[:-3]
            env = {"cfg": Config(), "uri": lambda s: s}
            with open(os.path.join(directory, fname), encoding="utf-8") as f:
                exec(compile(f.read(), fname, "exec"), env)
            print("FIXTURE", kind, name)
            for setting, value in env["cfg"].settings:
                print("CFG", setting, hexed(repr(value)))
            request = env["request"]
            if kind == "invalid":
                print("ERROR", request.__name__)
                continue
            for req in request if isinstance(request, list) else [request]:
                print("REQ")
                print("METHOD", hexed(req["method"]))
                print("URI", hexed(req["uri"]))
                print("VERSION", *req["version"])
                for hname, hvalue in req["headers"]:
                    print("HEADER", hexed(hname), hexed(hvalue))
                print("BODY", hexed(req["body"]))
                if "trailers" in req:
                    print("TRAILERS")
                    for tname, tvalue in req["trailers"]:
                        print("TRAILER", hexed(tname), hexed(tvalue))
    print("END")


if __name__ == "__main__":
    main(sys.argv[1])
