"""deephash.atomic: the one way deephash replaces a file (checkpoints, codes and embeddings files)."""
import errno
import os

import numpy as np
import pytest
import torch

from deephash.atomic import atomic_write, temporary_name
from deephash.codes import write_npz
from deephash.training.run import Checkpoint


def test_replaces_whole_or_not_at_all(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    with atomic_write(p) as f:
        f.write(b"new")
        assert p.read_bytes() == b"old"  # not visible before the block ends
    assert p.read_bytes() == b"new"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(p) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["f.bin"]  # no temporary left


def test_errors_name_the_destination(tmp_path):
    target = tmp_path / "missing" / "f.npz"
    with pytest.raises(OSError) as e:
        with atomic_write(target):
            pass
    assert e.value.errno == errno.ENOENT and e.value.filename == str(target)
    assert temporary_name(target) != temporary_name(target)  # one per writer
    assert os.path.dirname(temporary_name(target)) == str(target.parent)


def test_writers_use_it(tmp_path, monkeypatch):
    write_npz(tmp_path / "codes", a=np.arange(3))  # exactly the path given, no suffix added
    assert np.load(tmp_path / "codes")["a"].tolist() == [0, 1, 2]
    Checkpoint(tmp_path / "run" / "checkpoint.pt").save({"m": 1}, 0, 1, [0.5], w=torch.ones(2))
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    # A failure while writing leaves the previous file.
    monkeypatch.setattr(np, "savez", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError, match="full"):
        write_npz(tmp_path / "codes", a=np.arange(5))
    assert np.load(tmp_path / "codes")["a"].tolist() == [0, 1, 2] and sorted(os.listdir(tmp_path)) == ["codes", "run"]


def test_symlinks_are_followed_and_special_files_written_in_place(tmp_path):
    """Issue 26: a rename over --out replaced a symlink, and turned a device into a regular file."""
    import stat
    import threading

    real, link = tmp_path / "real.bin", tmp_path / "link.bin"
    real.write_bytes(b"old")
    link.symlink_to(real)
    with atomic_write(link) as f:
        f.write(b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "made.bin")
    with atomic_write(dangling) as f:
        f.write(b"x")
    assert dangling.is_symlink() and (tmp_path / "made.bin").read_bytes() == b"x"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.update(data=open(fifo, "rb").read()))
    reader.start()
    with atomic_write(fifo) as f:
        f.write(b"through")
        f.seek(0)  # writers may seek back (zip directories): the pipe gets the final bytes
        f.write(b"T")
    reader.join(30)
    assert got["data"] == b"Through" and stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(OSError, match="FIFO; this output is written only to regular files"):
        with atomic_write(fifo, special=False):
            pass
    with pytest.raises(OSError) as e:
        with atomic_write(tmp_path):
            pass
    assert e.value.errno == errno.EISDIR
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "fifo", "link.bin", "made.bin", "real.bin"]


def test_a_planted_temporary_name_is_never_followed(tmp_path):
    """Temporaries are created with O_EXCL under a random name: a symlink planted at the destination's
    old fixed temporary name (report's F.tmp) is left alone, and so is its target."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "r.html.tmp").symlink_to(victim)
    with atomic_write(tmp_path / "r.html") as f:
        f.write(b"page")
    assert victim.read_text() == "precious" and (tmp_path / "r.html").read_bytes() == b"page"


def test_stale_temporaries_are_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".c.npz.{dead}.00112233aabb.tmp"
    stale.write_bytes(b"left by a killed writer")
    live = tmp_path / f".c.npz.{os.getpid()}.00112233aabb.tmp"
    live.write_bytes(b"a writer still at work")
    write_npz(tmp_path / "c.npz", a=np.arange(2))
    assert not stale.exists() and live.exists()
