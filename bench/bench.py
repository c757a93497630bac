"""ferricorn against gunicorn (sync and gthread), waitress, granian and bjoern,
side by side on one machine. Run it through bench/run, which installs what it
needs; see docs/benchmarks.md for what each column means.

Every run starts a fresh server, checks it answers, loads it with wrk
(keep-alive unless the workload says otherwise), reads the CPU time of the
whole server process tree from /proc before and after, and its proportional
set size (PSS) after. Servers are alternated within each round so that drift
in the machine's state spreads over all of them. Medians of the rounds are
reported, with each peer's ratio to ferricorn.
"""

import argparse
import array
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
APPS = os.path.join(BENCH, "apps")
# The peers' venv and the ferricorn binary; the test suite's smoke test points
# these at its own venv and its debug build.
VENV = os.environ.get("BENCH_VENV", os.path.join(BENCH, ".venv"))
VENV_BIN = os.path.join(VENV, "bin")
FERRICORN = os.environ.get("FERRICORN_BIN", os.path.join(VENV_BIN, "ferricorn"))
# A second ferricorn build, run as the server "ferricorn-b" beside the first in
# every workload and memory case ferricorn is in: two builds compared in one run.
FERRICORN_B = os.environ.get("FERRICORN_B", "")
TICK = os.sysconf("SC_CLK_TCK")
WORKERS = 2
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# ---------------------------------------------------------------- servers


def server_argv(server, app, port, threads=None, preload=False):
    """How to start each server with WORKERS processes on 127.0.0.1:port."""
    bind = f"127.0.0.1:{port}"
    if server in ("ferricorn", "ferricorn-b"):
        binary = FERRICORN if server == "ferricorn" else FERRICORN_B
        argv = [binary, "-w", str(WORKERS), "-b", bind, "--log-level", "warning"]
        if threads:
            argv += ["--threads", str(threads)]
        if preload:
            argv.append("--preload")
        return argv + [app]
    if server == "gunicorn":
        argv = [f"{VENV_BIN}/gunicorn", "-w", str(WORKERS), "-b", bind, "--log-level", "warning"]
        if preload:
            argv.append("--preload")
        return argv + [app]
    if server == "gunicorn-gthread":
        return [f"{VENV_BIN}/gunicorn", "-w", str(WORKERS), "-k", "gthread", "--threads", str(threads or 4),
                "-b", bind, "--log-level", "warning", app]
    if server == "waitress":
        # One process with 4 threads: waitress has no worker processes.
        return [f"{VENV_BIN}/waitress-serve", f"--threads={threads or 4}", f"--listen={bind}", app]
    if server == "granian":
        return [f"{VENV_BIN}/granian", "--interface", "wsgi", "--workers", str(WORKERS), "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning", app]
    if server == "bjoern":
        return [f"{VENV_BIN}/python", os.path.join(APPS, "bjoern_fork.py"), app, str(port), str(WORKERS)]
    raise ValueError(server)


def with_b(servers):
    """`servers` (names, or cases whose first item is one), each ferricorn entry
    followed by the same for "ferricorn-b" when FERRICORN_B names a build."""
    out = []
    for s in servers:
        out.append(s)
        name = s if isinstance(s, str) else s[0]
        if FERRICORN_B and name == "ferricorn":
            out.append("ferricorn-b" if isinstance(s, str) else ("ferricorn-b",) + tuple(s[1:]))
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path="/", timeout=1.0):
    """Status of one GET on a fresh connection, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
            data = s.recv(64)
            m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
            return int(m.group(1)) if m else None
    except OSError:
        return None


def descendants(pid):
    """pid and every process below it, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
                parents.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError):
                pass
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(parents.get(p, []))
    return tree


def steal_seconds():
    """CPU time the hypervisor gave to others, all CPUs (/proc/stat): on a VM a
    round that lost much of it is slower for reasons outside the servers."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / TICK
    except (OSError, ValueError, IndexError):
        return 0.0


def cpu_seconds(pids):
    """user+system CPU of these processes, and of their reaped children."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2:].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, ValueError):
            pass
    return total / TICK


def pss_mib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


PAGE = os.sysconf("SC_PAGE_SIZE")
PRESENT, FRAME = 1 << 63, (1 << 55) - 1


def alone_mib(pids):
    """The tree's resident memory with each physical page counted once: the PSS the
    tree would have if no process outside it mapped any of its pages. Plain PSS
    splits a page with every process that maps it, bench.py (a Python process)
    included, so a server that maps the same libpython as bench.py looks smaller
    than one that does not. Page frame numbers need root; None without them."""
    frames = set()
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps") as smaps, open(f"/proc/{p}/pagemap", "rb") as pagemap:
                span = None
                for line in smaps:
                    head = line.split(maxsplit=1)[0]
                    if "-" in head and not head.endswith(":"):
                        lo, hi = (int(x, 16) for x in head.split("-"))
                        span = (lo, hi)
                    elif head == "Rss:" and span and int(line.split()[1]) > 0:
                        pagemap.seek(span[0] // PAGE * 8)
                        entries = array.array("Q", pagemap.read((span[1] - span[0]) // PAGE * 8))
                        for e in entries:
                            if e & PRESENT:
                                if not e & FRAME:
                                    return None
                                frames.add(e & FRAME)
        except OSError:
            pass
    return len(frames) * PAGE / 2**20


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Server:
    def __init__(self, name, app, threads=None, preload=False, log=None):
        self.name, self.port = name, free_port()
        argv = server_argv(name, app, self.port, threads, preload)
        env = dict(os.environ, PYTHONPATH=APPS, VIRTUAL_ENV=VENV)
        env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=APPS, env=env, stdout=log or subprocess.DEVNULL,
                                     stderr=log or subprocess.DEVNULL, start_new_session=True)
        self.ready_after = None

    def wait_ready(self, path="/"):
        deadline = self.started + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before answering")
            if http_get(self.port, path, timeout=0.5) == 200:
                self.ready_after = time.monotonic() - self.started
                return self.ready_after
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} did not answer 200 within {READY_TIMEOUT} s")

    def wait_workers(self):
        """Until the tree has all its processes (workers fork after the first answers)."""
        want = {"waitress": 1}.get(self.name, WORKERS + 1)
        deadline = time.monotonic() + READY_TIMEOUT
        while len(descendants(self.proc.pid)) < want and time.monotonic() < deadline:
            time.sleep(0.05)

    def tree(self):
        return descendants(self.proc.pid)

    def stop(self):
        pids = self.tree()
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()


# ---------------------------------------------------------------- wrk


@dataclass
class Workload:
    name: str
    app: str
    path: str = "/"
    conns: int = 64
    close: bool = False
    post_bytes: int = 0
    threads: int = None
    servers: tuple = ("ferricorn", "gunicorn", "gunicorn-gthread", "waitress", "granian", "bjoern")
    note: str = ""
    # Clients that each hold one endless event stream (run_sse), not wrk.
    sse: bool = False


WORKLOADS = [
    Workload("hello", "bench_app:app", note="hello world, keep-alive"),
    Workload("flask", "flask_app:app", "/?name=bench", note="small Flask app (route, query argument, JSON)"),
    Workload("close", "bench_app:app", close=True, note="hello world, `Connection: close` on every request"),
    Workload("1mib", "bench_app:app", "/1mib", conns=16, note="1 MiB response from a bytes body, 16 connections"),
    Workload("1mib-file", "bench_app:app", "/1mib-file", conns=16,
             note="1 MiB response through wsgi.file_wrapper, 16 connections"),
    Workload("post-64k", "bench_app:app", "/echo", post_bytes=64 * 1024, conns=16,
             note="64 KiB POST echoed back, 16 connections"),
    Workload("stream", "bench_app:app", "/stream100", conns=16,
             servers=("ferricorn", "gunicorn-gthread", "granian", "bjoern"),
             note="a generator of 100 blocks of 1 KiB per response (chunked), 16 connections"),
    Workload("sse", "bench_app:app", "/sse50", conns=16, threads=8, sse=True,
             servers=("ferricorn", "gunicorn-gthread"),
             note="16 clients each hold an event stream, 1 KiB every 50 ms; 8 threads per worker. "
                  "req/s: events/s; CPU µs per event; p50/p99: delivery delay (arrival minus the time "
                  "the app made the event)"),
    Workload("sleep10-threads", "bench_app:app", "/sleep10", threads=4,
             servers=("ferricorn", "gunicorn-gthread", "waitress"),
             note="app sleeps 10 ms; 4 threads per worker (waitress: 4 threads, 1 process)"),
]


@dataclass
class Result:
    rps: float = 0.0
    requests: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    non2xx: int = 0
    cpu_us: float = 0.0
    pss_mib: float = 0.0
    split: str = ""
    steal_pct: float = 0.0
    extra: dict = field(default_factory=dict)


def parse_latency(text, label):
    m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return 0.0
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port, w, duration):
    argv = ["wrk", "-t1", f"-c{w.conns}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if w.close:
        argv += ["-H", "Connection: close"]
    script = None
    if w.post_bytes:
        script = os.path.join(BENCH, "results", "post.lua")
        with open(script, "w") as f:
            f.write(f'wrk.method = "POST"\nwrk.body = string.rep("x", {w.post_bytes})\n'
                    'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        argv += ["-s", script]
    argv.append(f"http://127.0.0.1:{port}{w.path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    r = Result()
    m = re.search(r"(\d+) requests in", out)
    r.requests = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r.rps = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r.errors = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r.non2xx = int(m.group(1)) if m else 0
    r.p50_ms = parse_latency(out, "50")
    r.p99_ms = parse_latency(out, "99")
    return r


def run_sse(port, w, duration):
    """w.conns clients each hold one stream for `duration` s. Every event carries
    the time the app made it (`data: <time.time()> …`): the delay is its arrival
    minus that, on the same clock."""
    delays, lock = [], threading.Lock()
    stop = time.time() + duration

    def client():
        mine = []
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(f"GET {w.path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
                buf = b""
                while time.time() < stop:
                    data = sock.recv(65536)
                    if not data:
                        break
                    now = time.time()
                    buf += data
                    while True:
                        i = buf.find(b"data: ")
                        j = buf.find(b" ", i + 6) if i >= 0 else -1
                        if j < 0:
                            buf = buf[i:] if i >= 0 else buf[-5:]
                            break
                        mine.append(now - float(buf[i + 6:j]))
                        buf = buf[j:]
        except OSError:
            pass
        with lock:
            delays.extend(mine)

    clients = [threading.Thread(target=client) for _ in range(w.conns)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(duration + 10)
    r = Result()
    r.requests = len(delays)
    r.rps = len(delays) / duration
    if delays:
        delays.sort()
        r.p50_ms = 1000 * delays[len(delays) // 2]
        r.p99_ms = 1000 * delays[min(len(delays) - 1, len(delays) * 99 // 100)]
    return r


def wait_idle(s, limit=2.0):
    """Until the server's tree has been idle for 100 ms (at most `limit` s): the
    warm-up's last requests, whose clients have gone, are answered before the
    measured run rather than ahead of its first requests. With an app that sleeps
    10 ms per request, they were the measured run's p99."""
    end = time.monotonic() + limit
    last = cpu_seconds(s.tree())
    while time.monotonic() < end:
        time.sleep(0.1)
        now = cpu_seconds(s.tree())
        if now - last < 0.002:
            return
        last = now


def measure(server_name, w, duration, log):
    s = Server(server_name, w.app, threads=w.threads, log=log)
    try:
        s.wait_ready(w.path if not (w.post_bytes or w.sse) else "/")
        s.wait_workers()
        # Warm up (imports, caches, connection set-up) outside the measurement.
        if w.sse:
            run_sse(s.port, w, 1)
        else:
            run_wrk(s.port, Workload(w.name, w.app, w.path, conns=w.conns, close=w.close,
                                     post_bytes=w.post_bytes), 1)
        wait_idle(s)
        pids = s.tree()
        before = {p: cpu_seconds([p]) for p in pids}
        steal_before, wall_before = steal_seconds(), time.monotonic()
        r = run_sse(s.port, w, duration) if w.sse else run_wrk(s.port, w, duration)
        steal, wall = steal_seconds() - steal_before, time.monotonic() - wall_before
        after = {p: cpu_seconds([p]) for p in s.tree()}
        r.steal_pct = 100 * steal / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
        used = {p: after.get(p, 0.0) - before.get(p, 0.0) for p in set(before) | set(after)}
        total = sum(used.values())
        r.cpu_us = total / r.requests * 1e6 if r.requests else 0.0
        busy = sorted((v for p, v in used.items() if p != s.proc.pid), reverse=True)
        if total > 0 and len(busy) > 1:
            r.split = "/".join(f"{100 * v / sum(busy):.0f}" for v in busy)
        r.pss_mib = pss_mib(s.tree())
        return r
    finally:
        s.stop()


def measure_memory(server_name, app, preload, log):
    """Idle whole-tree PSS and master RSS after 2000 requests, and start-up time."""
    s = Server(server_name, app, preload=preload, log=log)
    try:
        ready = s.wait_ready()
        s.wait_workers()
        subprocess.run(["wrk", "-t1", "-c8", "-d1s", f"http://127.0.0.1:{s.port}/"],
                       capture_output=True, timeout=60)
        time.sleep(0.5)
        tree = s.tree()
        return {"pss": pss_mib(tree), "alone": alone_mib(tree), "master_rss": rss_mib(s.proc.pid),
                "master_pss": pss_mib([s.proc.pid]), "ready_s": ready}
    finally:
        s.stop()


# ---------------------------------------------------------------- report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=int(os.environ.get("DURATION", 10)))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 3)))
    ap.add_argument("--workloads", default=os.environ.get("WORKLOADS", ""),
                    help="comma-separated names (default: all, then memory)")
    ap.add_argument("--servers", default=os.environ.get("SERVERS", ""), help="comma-separated names")
    ap.add_argument("--out", default=os.path.join(BENCH, "results", "latest.md"))
    args = ap.parse_args()
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    wanted = set(filter(None, args.workloads.split(",")))
    only = set(filter(None, args.servers.split(",")))
    log = open(os.path.join(BENCH, "results", "servers.log"), "ab")
    lines = [f"# bench/run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"{os.cpu_count()} CPUs; {WORKERS} workers per server; `wrk -t1`, {args.duration} s per run, "
             f"medians of {args.rounds} rounds, servers alternated within each round.", ""]

    for w in WORKLOADS:
        if wanted and w.name not in wanted:
            continue
        servers = [s for s in with_b(w.servers) if not only or s in only]
        runs = {s: [] for s in servers}
        for rnd in range(args.rounds):
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for name in order:
                try:
                    r = measure(name, w, args.duration, log)
                except Exception as e:  # one failing peer must not end the whole run
                    print(f"[bench] {w.name} {name}: {e}", file=sys.stderr)
                    r = None
                runs[name].append(r)
                if r:
                    print(f"[bench] {w.name} round {rnd + 1} {name}: {r.rps:,.0f} req/s, "
                          f"{r.cpu_us:.1f} us CPU/req, p99 {r.p99_ms:.2f} ms, PSS {r.pss_mib:.1f} MiB, "
                          f"split {r.split or '-'}, steal {r.steal_pct:.1f} %, errors {r.errors}, "
                          f"non-2xx {r.non2xx}", file=sys.stderr)
        base = med([r.rps for r in runs.get("ferricorn", []) if r])
        lines += [f"## {w.name}: {w.note}", "",
                  "| server | req/s | ferricorn / server | CPU µs/req | p50 ms | p99 ms | PSS MiB | "
                  "worker CPU split | CPU steal % | errors | non-2xx |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name in servers:
            ok = [r for r in runs[name] if r]
            if not ok:
                lines.append(f"| {name} | failed | | | | | | | | | |")
                continue
            rps = med([r.rps for r in ok])
            ratio = f"{base / rps:.2f}×" if rps and base else "—"
            lines.append(
                f"| {name} | {rps:,.0f} | {ratio} | {med([r.cpu_us for r in ok]):.1f} | "
                f"{med([r.p50_ms for r in ok]):.2f} | {med([r.p99_ms for r in ok]):.2f} | "
                f"{med([r.pss_mib for r in ok]):.1f} | {' '.join(r.split or '-' for r in ok)} | "
                f"{' '.join(f'{r.steal_pct:.1f}' for r in ok)} | "
                f"{sum(r.errors for r in ok)} | {sum(r.non2xx for r in ok)} |")
        lines.append("")
        write(args.out, lines)

    if not wanted or "memory" in wanted:
        cases = [("ferricorn", "bench_app:app", False), ("ferricorn", "bench_app:app", True),
                 ("gunicorn", "bench_app:app", False), ("gunicorn-gthread", "bench_app:app", False),
                 ("waitress", "bench_app:app", False), ("granian", "bench_app:app", False),
                 ("bjoern", "bench_app:app", False),
                 ("ferricorn", "flask_app:app", False), ("ferricorn", "flask_app:app", True),
                 ("gunicorn", "flask_app:app", False), ("gunicorn", "flask_app:app", True),
                 ("bjoern", "flask_app:app", False)]
        cases = [c for c in with_b(cases) if not only or c[0] in only]
        got = {c: [] for c in cases}
        for rnd in range(args.rounds):
            for c in cases:
                try:
                    got[c].append(measure_memory(c[0], c[1], c[2], log))
                except Exception as e:
                    print(f"[bench] memory {c}: {e}", file=sys.stderr)
        lines += ["## memory and start-up", "",
                  "Whole-tree PSS and the master's RSS and PSS, idle after a 1 s warm-up; \"alone\" counts each "
                  "physical page of the tree once, as PSS would if nothing outside the tree (bench.py "
                  "included) shared its pages; start-up is exec to the first 200 (polled every 5 ms).", "",
                  "| server | app | preload | PSS MiB | alone MiB | master RSS MiB | master PSS MiB | start-up s |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in cases:
            ok = got[c]
            if not ok:
                lines.append(f"| {c[0]} | {c[1]} | {'yes' if c[2] else 'no'} | failed | | | | |")
                continue
            alone = [m["alone"] for m in ok if m["alone"] is not None]
            alone = f"{med(alone):.1f}" if alone else "needs root"
            lines.append(f"| {c[0]} | {c[1]} | {'yes' if c[2] else 'no'} | {med([m['pss'] for m in ok]):.1f} | "
                         f"{alone} | {med([m['master_rss'] for m in ok]):.1f} | "
                         f"{med([m['master_pss'] for m in ok]):.1f} | {med([m['ready_s'] for m in ok]):.3f} |")
        lines.append("")
        write(args.out, lines)
    print("\n".join(lines))


def write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
