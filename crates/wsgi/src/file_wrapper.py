"""wsgi.file_wrapper (PEP 3333 "Optional Platform-Specific File Handling")."""

import os
import stat


class FileWrapper:
    """Iterates a file-like object in blocks; the server may send a regular file
    with sendfile(2) instead of iterating."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


def regular_file(wrapper):
    """(fd, offset, bytes left) when `wrapper` wraps a regular file, else None."""
    try:
        fd = wrapper.filelike.fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        offset = wrapper.filelike.tell()
        return fd, offset, max(st.st_size - offset, 0)
    except Exception:  # noqa: BLE001 - anything odd: just iterate instead
        return None
