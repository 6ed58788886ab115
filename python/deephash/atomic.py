"""Writing a file so that readers, and a run resumed after a kill, see the old file or the new one, never
half of one: a temporary of a name unique to this writer in the destination's folder, fsync, rename, and
an fsync of the folder so that the rename survives a crash."""
from __future__ import annotations

import contextlib
import os
import secrets


def temporary_name(path) -> str:
    """A name beside ``path`` that no other writer (process or call) uses."""
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


def fsync_dir(path) -> None:
    """Make a rename into ``path``'s folder durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path):
    """A new binary file that replaces ``path`` when the block ends without an error (and is removed when
    it does not). An ``OSError`` opening it names ``path``, not the temporary."""
    tmp = temporary_name(path)
    try:
        f = open(tmp, "xb")
    except OSError as e:
        raise OSError(e.errno, e.strerror, os.fspath(path)) from None
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path)
