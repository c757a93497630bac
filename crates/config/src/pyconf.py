"""Read a gunicorn.conf.py as gunicorn does: run it, keep the module-level names
that are gunicorn settings, and list the server hooks it defines. Prints JSON."""

import json
import sys

SETTINGS = set(sys.argv[2].split(","))
HOOKS = set(sys.argv[3].split(","))
path = sys.argv[1]
namespace = {"__file__": path, "__name__": "__config__"}
with open(path, "rb") as f:
    code = compile(f.read(), path, "exec")
try:
    exec(code, namespace)
except BaseException as e:  # noqa: BLE001 - report anything the file raises
    import traceback

    where = traceback.extract_tb(e.__traceback__)[-1]
    print(json.dumps({"error": f"{type(e).__name__}: {e} (line {where.lineno})"}))
    sys.exit(0)

settings, hooks, unreadable = {}, [], []
for name, value in namespace.items():
    if name in HOOKS and callable(value):
        hooks.append(name)
    elif name in SETTINGS:
        try:
            json.dumps(value)
            settings[name] = value
        except TypeError:
            unreadable.append(name)
print(json.dumps({"settings": settings, "hooks": sorted(hooks), "unreadable": unreadable}))
