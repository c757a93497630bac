"""A hostile app: on /scribble it writes over every page of ferricorn's scoreboard
it finds in /proc/self/maps (tests/it/scoreboard.rs).

Every 8-byte word becomes 1: to the master of old that read as "busy since the
machine booted" in every worker's slot. Each page is probed with a write to
/proc/self/mem (which fails with EFAULT or EIO on a page mapped read-only, where a
plain store would segfault); a page that refuses is tried with mprotect, and the
writable page is tried with mremap (growing it over the next slot). Only pages
shown writable are written with memmove. It also tries to reopen the board
through /proc/self/map_files.
"""

import ctypes
import errno
import json
import mmap
import os

WORDS = (1).to_bytes(8, "little")
PROT_READ, PROT_WRITE, MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2, 1, 2

libc = ctypes.CDLL(None, use_errno=True)
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MAP_FAILED = ctypes.c_void_p(-1).value


def board_pages():
    """(address, perms) of each page of the scoreboard: the shared mappings of
    ferricorn's memfd, or of /dev/zero (an anonymous shared mapping)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            name = fields[5].strip() if len(fields) > 5 else ""
            if fields[1][3] != "s" or not ("ferricorn-scoreboard" in name or name.startswith("/dev/zero")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            for addr in range(start, end, mmap.PAGESIZE):
                yield addr, fields[1]


def grow(addr, fill):
    """Try to grow the writable page at `addr` over the next one; put it back."""
    page = mmap.PAGESIZE
    moved = libc.mremap(addr, page, 2 * page, MREMAP_MAYMOVE, None)
    if moved in (None, MAP_FAILED):
        return errno.errorcode.get(ctypes.get_errno(), "?")
    ctypes.memmove(moved + page, fill, page)
    libc.mremap(moved, 2 * page, page, MREMAP_MAYMOVE | MREMAP_FIXED, addr)
    return "grown"


def map_files():
    """How many of the board's mappings /proc/self/map_files opens for writing (a
    way around the read-only mapping, for a process with CAP_SYS_ADMIN only)."""
    opened = 0
    with open("/proc/self/maps") as maps:
        ranges = [line.split()[0] for line in maps if "ferricorn-scoreboard" in line or "/dev/zero" in line]
    for r in ranges:
        try:
            os.close(os.open(f"/proc/self/map_files/{r}", os.O_RDWR))
            opened += 1
        except OSError:
            pass
    return opened


def board_fds():
    """Open fds of this process that are the board's memfd (the master's, if a
    worker kept them, would let it map the board writable)."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += "ferricorn-scoreboard" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return found


def scribble(environ, start_response):
    page = mmap.PAGESIZE
    fill = WORDS * (page // 8)
    written, refused, mprotected, grown = [], {}, 0, {}
    try:
        mem, mem_open = os.open("/proc/self/mem", os.O_RDWR), "ok"
    except OSError as e:
        # A worker that changed user is not dumpable: /proc/self/mem is root's.
        # Then a page shown writable in /proc/self/maps is taken at its word.
        mem, mem_open = None, errno.errorcode.get(e.errno, str(e.errno))
    for addr, perms in list(board_pages()):
        try:
            if mem is not None:
                os.pwrite(mem, fill, addr)
            elif "w" not in perms:
                raise OSError(errno.EACCES, "mapped read-only")
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            refused[name] = refused.get(name, 0) + 1
            if libc.mprotect(addr, page, PROT_READ | PROT_WRITE) != 0:
                continue
            mprotected += 1
        ctypes.memmove(addr, fill, page)
        written.append(addr)
    if mem is not None:
        os.close(mem)
    for addr in written[:1]:
        result = grow(addr, fill)
        grown[result] = grown.get(result, 0) + 1
    body = json.dumps(
        {
            "pid": os.getpid(),
            "uid": os.getuid(),
            "proc_self_mem": mem_open,
            "written": len(written),
            "refused": refused,
            "mprotected": mprotected,
            "mremap": grown,
            "map_files": map_files(),
            "fds": board_fds(),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def app(environ, start_response):
    route = {"/scribble": scribble, "/pid": pid}.get(environ["PATH_INFO"], pid)
    return route(environ, start_response)
