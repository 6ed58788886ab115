"""Self-supervised embeddings (deephash.data.selfsup): end to end on a tiny data set, determinism, resume after a
kill, labels never read, the cache, the command line."""
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from deephash.data import selfsup
from deephash.cli import main
from deephash.data import load_data
from deephash.data.selfsup import SelfSupConfig, self_supervised_embeddings, train_selfsup

TINY = SelfSupConfig(width=4, proj_dim=8, epochs=3, batch_size=32)


def _images(n=120, side=12, classes=4, seed=0):
    """Greyscale items of ``classes`` kinds (a bright bar at a class-dependent place) with noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    img = rng.integers(0, 60, size=(n, side, side)).astype(np.uint8)
    for i, c in enumerate(y):
        img[i, 2 * c + 1: 2 * c + 3, 1:-1] = 230
    return img, y.astype(np.int64)


@pytest.fixture
def tiny_npz(tmp_path):
    img, y = _images()
    p = tmp_path / "tiny.npz"
    np.savez(p, images=img, y=y)
    return p


def test_end_to_end_tiny(tmp_path, tiny_npz):
    out = tmp_path / "emb.npz"
    info = self_supervised_embeddings(tiny_npz, out, config=TINY, seed=0, cache_dir=tmp_path / "c", progress=False)
    assert info["trained"] and len(info["history"]) == TINY.epochs
    assert all(np.isfinite(info["history"]))
    with np.load(out) as z:
        x, y = z["x"], z["y"]
    assert x.shape == (120, 9 * 4 * TINY.width) and x.dtype == np.float32 and np.isfinite(x).all()
    assert np.array_equal(y, _images()[1])
    assert x.std(axis=0).max() > 0  # not a constant map
    split = load_data(out)  # the other commands read it (standard protocol split)
    assert split.dim == x.shape[1] and len(split.x_query) + len(split.x_db) == 120


def test_pixel_rows_npz_and_no_labels(tmp_path):
    img, _ = _images(n=64)
    p = tmp_path / "rows.npz"
    np.savez(p, x=img.reshape(64, -1).astype(np.float32) / 255)  # pixel rows, no labels
    out = tmp_path / "e.npz"
    info = self_supervised_embeddings(p, out, config=TINY, cache_dir=tmp_path / "c", progress=False)
    assert info["y"] is None
    with np.load(out) as z:
        assert sorted(z.files) == ["x"] and z["x"].shape == (64, 9 * 4 * TINY.width)


def test_deterministic_under_seed(tmp_path, tiny_npz):
    a = self_supervised_embeddings(tiny_npz, config=TINY, seed=3, cache_dir=tmp_path / "a", progress=False)["x"]
    b = self_supervised_embeddings(tiny_npz, config=TINY, seed=3, cache_dir=tmp_path / "b", progress=False)["x"]
    c = self_supervised_embeddings(tiny_npz, config=TINY, seed=4, cache_dir=tmp_path / "c", progress=False)["x"]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_never_reads_labels(tmp_path, tiny_npz):
    # The training function takes images only.
    assert "y" not in inspect.signature(train_selfsup).parameters
    img, y = _images()
    scrambled = tmp_path / "scrambled.npz"
    np.savez(scrambled, images=img, y=np.random.default_rng(1).permutation(y))
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, images=img)
    runs = [self_supervised_embeddings(p, config=TINY, cache_dir=tmp_path / name, progress=False)
            for name, p in (("t", tiny_npz), ("s", scrambled), ("u", unlabelled))]
    assert np.array_equal(runs[0]["x"], runs[1]["x"]) and np.array_equal(runs[0]["x"], runs[2]["x"])
    assert not np.array_equal(runs[0]["y"], runs[1]["y"]) and runs[2]["y"] is None
    # Same images, so the same cache key: labels are not part of the identity of a training.
    assert len({r["key"] for r in runs}) == 1


def test_cache_hit_does_not_retrain(tmp_path, tiny_npz, monkeypatch):
    monkeypatch.setenv("DEEPHASH_CACHE", str(tmp_path / "cache"))
    first = self_supervised_embeddings(tiny_npz, tmp_path / "1.npz", config=TINY, progress=False)
    assert first["trained"] and first["path"].is_relative_to(tmp_path / "cache" / "selfsup")

    def boom(*a, **k):
        raise AssertionError("retrained despite the cache")

    monkeypatch.setattr(selfsup, "train_selfsup", boom)
    second = self_supervised_embeddings(tiny_npz, tmp_path / "2.npz", config=TINY, progress=False)
    assert not second["trained"] and second["key"] == first["key"]
    assert np.array_equal(np.load(tmp_path / "1.npz")["x"], np.load(tmp_path / "2.npz")["x"])
    # Another configuration or seed is another key, hence trains.
    with pytest.raises(AssertionError, match="retrained"):
        self_supervised_embeddings(tiny_npz, config=TINY, seed=1, progress=False)


_KILLED_RUN = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from deephash.data import selfsup
    from deephash.training.run import Checkpoint

    class SlowAfterFirst(Checkpoint):  # stalls after the first epoch's checkpoint, so the kill lands mid-run
        def save(self, config, seed, epoch, history, **state):
            super().save(config, seed, epoch, history, **state)
            print(f"saved {epoch}", flush=True)
            if epoch == 1:
                time.sleep(120)

    selfsup.Checkpoint = SlowAfterFirst
    cfg = selfsup.SelfSupConfig(width=4, proj_dim=8, epochs=3, batch_size=32)
    selfsup.self_supervised_embeddings(sys.argv[1], config=cfg, seed=0, cache_dir=sys.argv[2], progress=False)
    print("finished", flush=True)
""")


def test_resumes_after_kill(tmp_path, tiny_npz):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cache = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(tiny_npz), str(cache)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "saved 1", line
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (cache / "checkpoint.pt").is_file() and not (cache / "embeddings.npz").exists()
    assert torch.load(cache / "checkpoint.pt", weights_only=True)["epoch"] == 1

    import io
    log = io.StringIO()
    resumed = self_supervised_embeddings(tiny_npz, config=TINY, seed=0, cache_dir=cache, stream=log)
    assert "resuming after epoch 1/3" in log.getvalue()
    assert "epoch 1/3," not in log.getvalue() and "epoch 3/3," in log.getvalue()  # epoch 1 was not retrained
    whole = self_supervised_embeddings(tiny_npz, config=TINY, seed=0, cache_dir=tmp_path / "whole", progress=False)
    assert resumed["history"] == whole["history"]
    assert np.array_equal(resumed["x"], whole["x"])


def test_damaged_cache_entry_is_refused_by_name(tmp_path, tiny_npz, capsys):
    cache = tmp_path / "c"
    self_supervised_embeddings(tiny_npz, config=TINY, cache_dir=cache, progress=False)
    (cache / "embeddings.npz").write_bytes(b"not a zip")
    with pytest.raises(selfsup.SelfSupError, match="embeddings.npz: a damaged cache entry"):
        self_supervised_embeddings(tiny_npz, config=TINY, cache_dir=cache, progress=False)


def test_checkpoint_of_another_configuration_is_refused(tmp_path, tiny_npz):
    cache = tmp_path / "c"
    self_supervised_embeddings(tiny_npz, config=TINY, cache_dir=cache, progress=False)
    (cache / "embeddings.npz").unlink()
    with pytest.raises(ValueError, match="another configuration or seed"):
        self_supervised_embeddings(tiny_npz, config=SelfSupConfig(width=4, proj_dim=8, epochs=2, batch_size=32),
                                   cache_dir=cache, progress=False)


def test_augment_is_a_seeded_view():
    x = torch.rand(8, 1, 12, 12)
    a = selfsup.augment(x, torch.Generator().manual_seed(0))
    b = selfsup.augment(x, torch.Generator().manual_seed(0))
    c = selfsup.augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_nt_xent_prefers_matching_views():
    z = torch.randn(16, 8)
    assert selfsup.nt_xent(z, z, 0.2) < selfsup.nt_xent(z, torch.randn(16, 8), 0.2)


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli_embed_self_supervised(tmp_path, tiny_npz, monkeypatch, capsys):
    monkeypatch.setenv("DEEPHASH_CACHE", str(tmp_path / "cache"))
    args = ["embed", "--self-supervised", "--data", str(tiny_npz), "--epochs", "1", "--width", "4",
            "--batch-size", "32", "--no-progress", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "a.npz")]) == 0
    assert "trained in" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "b.npz")]) == 0
    assert "from the cache" in capsys.readouterr().out
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["x"].shape == (120, 9 * 16) and np.array_equal(a["x"], b["x"]) and np.array_equal(a["y"], b["y"])


def test_cli_embed_refuses_its_out_before_training(tmp_path, tiny_npz, monkeypatch, capsys):
    monkeypatch.setenv("DEEPHASH_CACHE", str(tmp_path / "cache"))

    def boom(*a, **k):
        raise AssertionError("trained although --out cannot be written")

    monkeypatch.setattr(selfsup, "train_selfsup", boom)
    (tmp_path / "adir").mkdir()
    args = ["embed", "--self-supervised", "--data", str(tiny_npz), "--quick", "--no-progress"]
    for out, culprit in ((tmp_path / "adir", "is a directory"), (tmp_path / "no" / "x.npz", "no such directory")):
        assert main(args + ["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert culprit in err and str(out) in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("device", [[], ["--device", "cpu"]], ids=["default-device", "cpu"])
def test_cli_demo_on_self_supervised_embeddings(tmp_path, monkeypatch, capsys, device):
    monkeypatch.setenv("DEEPHASH_CACHE", str(tmp_path / "cache"))
    img, y = _images(n=400, side=12, classes=4)
    p = tmp_path / "imgs.npz"
    np.savez(p, images=img, y=y)
    out = tmp_path / "demo"
    rc = main(["demo", "--embeddings", "self-supervised", "--quick", "--data", str(p), "--bits", "16",
               "--anchors", "16", "--out", str(out), "--no-progress", *device])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "self-supervised embeddings" in text and "ITQ 16b" in text and "LSH 16b" in text
    d = json.loads((out / "demo.json").read_text())
    assert d["embeddings"] == "self-supervised" and d["data"] == str(out / "embeddings.npz")
    assert 0 <= d["itq"]["mAP@1000"] <= 1 and 0 <= d["hagcn"]["mAP@1000"] <= 1


@pytest.mark.parametrize("argv, needle", [
    (["--self-supervised", "--epochs", "0"], "--epochs must be at least 1"),
    (["--self-supervised", "--lr", "-1"], "--lr must be positive"),
    (["--self-supervised", "--images", "somewhere"], "--images does not apply to --self-supervised"),
    (["--self-supervised", "--untrained"], "--untrained does not apply"),
    (["--self-supervised", "--data", "missing.npz"], "missing.npz: expected 'fashion-mnist' or a .npz"),
    (["--quick"], "--quick applies to --self-supervised only"),
    (["--images", "d", "--epochs", "3"], "--epochs applies to --self-supervised only"),
    ([], "--images DIR is needed"),
])
def test_cli_bad_options_one_line(tmp_path, capsys, argv, needle):
    assert main(["embed", *argv, "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_bad_image_files(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((10, 7), np.float32))  # 7 pixels: not a square image
    assert main(["embed", "--self-supervised", "--data", str(bad), "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err and "square" in err and len(err.strip().splitlines()) == 1
    np.savez(bad, images=np.full((10, 8, 8), 2.0, np.float32))
    assert main(["embed", "--self-supervised", "--data", str(bad), "--out", str(tmp_path / "o.npz")]) == 2
    assert "[0, 1]" in capsys.readouterr().err


def test_cli_demo_embeddings_option_is_checked(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--embeddings", "learned"])
    assert e.value.code == 2
