"""How deephash writes an output file, the one place it does (codes, search results, embeddings,
checkpoints, reports, index files and shard manifests); and :func:`open_regular`, how it opens an input
file that must be a regular one.

A regular file (or a path that does not exist yet) is replaced atomically, so that readers, and a run
resumed after a kill, see the old file or the new one, never half of one: a temporary of a name unique to
this writer (``.NAME.PID.RANDOM.tmp``, created with ``O_EXCL`` and locked while it is written) in the
destination's folder, fsync, rename, and an fsync of the folder so that the rename survives a crash.

What the path names decides the rest, as a shell redirection would:

- a symbolic link is followed: the file it points to is replaced (the link stays a link; a dangling
  link creates its target);
- a character device or a FIFO (``/dev/null``, ``/dev/stdout``, a named pipe) is opened and written in
  place: nothing is ever renamed over it (a rename would turn ``/dev/null`` into a regular file for the
  whole machine). Writers that need a seekable file refuse these (``special=False``);
- a directory, a socket or a block device is refused with an ``OSError`` naming the path.

Temporaries left by a writer that was killed are removed by the next write beside them
(:func:`remove_stale_temporaries`): a temporary whose pid is not a live process and that no writer holds
locked.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
import tempfile


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


def open_regular(path) -> int:
    """A descriptor of ``path`` opened for reading, refusing (``OSError`` naming it) what is not a regular
    file: opening a FIFO would wait for a writer forever, a device would read without end. Opened with
    ``O_NONBLOCK`` so that the check comes before any wait; for a regular file that flag changes nothing."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
            raise OSError(errno.EINVAL, f"is {what}, not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # someone else's live process (or a pid no process can have: then not alive)
    return True


def remove_stale_temporaries(path) -> list[str]:
    """Remove the temporaries of writers of ``path`` that died before renaming them (a killed save leaves
    one, as large as the file): those whose pid is not a live process and that no writer holds locked (a
    writer in another pid namespace sharing the folder holds its lock). Returns the names removed."""
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(rf"\.{re.escape(base)}\.(\d+)\.[0-9a-f]{{12}}\.tmp")
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    prefix = f".{base}."
    for name in names:
        m = pattern.fullmatch(name) if name.startswith(prefix) else None
        if m is None or _pid_alive(int(m.group(1))):
            continue
        full = os.path.join(folder, name)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            now = os.stat(full, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(full)
                removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def resolve_output(path, special: bool = True) -> tuple[str, bool]:
    """``(where to write, in_place)`` for an output path: the path a symbolic link points to (whose file is
    then replaced), and whether to write in place (a character device or a FIFO, with ``special``).
    Refuses, with an ``OSError`` naming ``path``, a directory, a socket, a block device, and a character
    device or FIFO when not ``special``."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        # Nothing there, or a dangling link: create what it names.
        return os.path.realpath(path), False
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return os.path.realpath(path), False
    if stat.S_ISDIR(mode):
        raise OSError(errno.EISDIR, "is a directory", path)
    if (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)) and special:
        return path, True
    what = ("a character device" if stat.S_ISCHR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket")
    only = "regular files" if not special else "regular files, character devices and FIFOs"
    raise OSError(errno.EINVAL, f"is {what}; this output is written only to {only}", path)


@contextlib.contextmanager
def atomic_write(path, mode: str = "xb", special: bool = True):
    """A binary file that replaces ``path`` when the block ends without an error (and is removed when it
    does not); a character device or FIFO at ``path`` is written in place instead (refused when not
    ``special``: for writers that seek or map what they wrote). An ``OSError`` opening it names ``path``,
    not the temporary. ``mode``: ``"xb"``, or ``"xb+"`` to read back what was written."""
    target, in_place = resolve_output(path, special)
    if in_place:
        try:
            out = open(target, "wb")
        except OSError as e:
            raise OSError(e.errno, e.strerror, os.fspath(path)) from None
        # Writers may seek back (a zip's directory), which a device or pipe cannot: they write to a
        # temporary file, copied through when the block ends.
        with out, tempfile.TemporaryFile(mode="w+b") as buf:
            yield buf
            buf.seek(0)
            shutil.copyfileobj(buf, out)
        return
    remove_stale_temporaries(target)
    tmp = temporary_name(target)
    try:
        f = open(tmp, mode)
    except OSError as e:
        raise OSError(e.errno, e.strerror, os.fspath(path)) from None
    try:
        with f:
            # Held until the file is renamed or removed: remove_stale_temporaries leaves it alone.
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, target)
            # Explicitly: a mapping of the file (index files) holds a duplicate of the descriptor, which
            # would keep the lock on the renamed file.
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target)
