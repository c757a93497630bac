"""bjoern has no process manager: listen once, fork N workers that each run the
loop on the shared socket (the pattern from bjoern's own fork example).
Usage: python bjoern_fork.py MODULE:APP PORT WORKERS"""

import importlib
import os
import signal
import sys

import bjoern

module, _, name = sys.argv[1].partition(":")
port, workers = int(sys.argv[2]), int(sys.argv[3])
app = getattr(importlib.import_module(module), name or "app")
bjoern.listen(app, "127.0.0.1", port)
children = []
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        bjoern.run()
        os._exit(0)
    children.append(pid)


def stop(signum, frame):
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


signal.signal(signal.SIGTERM, stop)
for pid in children:
    os.waitpid(pid, 0)
