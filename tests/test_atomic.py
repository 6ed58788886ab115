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
