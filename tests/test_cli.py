import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import image_folder
from deephash.cli import main


def _train(tmp_path, split_npz, *extra):
    """A training run; the networks (``--paper-recipe``, ``--method hagcn-net``) for 2 epochs."""
    run = tmp_path / "run"
    network = any(a in extra for a in ("--paper-recipe", "--seed-compatible", "hagcn-net"))
    epochs = ["--epochs", "2", "--batch-size", "32"] if network else []
    rc = main(["train", "--data", str(split_npz), "--bits", "16", *epochs, "--out", str(run), "--no-progress", *extra])
    assert rc == 0
    return run


def test_cli_end_to_end(tmp_path, split_npz, capsys):
    run = _train(tmp_path, split_npz, "--filter", "chebyshev", "--anchors", "16")
    out = capsys.readouterr().out
    assert "mAP@1000" in out and "HAGCN chebyshev 16b" in out
    for f in ("model.pt", "config.json", "metrics.json", "pr_curve.png", "checkpoint.pt"):
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    for k in ("mAP@1000", "mAP@all", "mAP@all-tie-aware", "P@1000", "P@r2"):
        assert 0.0 <= m[k] <= 1.0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["bits"] == 16 and cfg["model"]["filter"] == "chebyshev"

    q, db = tmp_path / "q.npz", tmp_path / "db.npz"
    assert main(["encode", "--model", str(run), "--data", str(split_npz), "--split", "query", "--out", str(q)]) == 0
    assert main(["encode", "--model", str(run / "model.pt"), "--data", str(split_npz), "--split", "db",
                 "--out", str(db)]) == 0
    assert main(["eval", "--query", str(q), "--db", str(db), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert abs(ev["mAP@1000"] - m["mAP@1000"]) < 1e-12  # same codes, same numbers
    idx = tmp_path / "db.idx"
    assert main(["index", "--codes", str(db), "--out", str(idx)]) == 0
    res = tmp_path / "res.npz"
    assert main(["search", "--index", str(idx), "--codes", str(q), "-k", "5", "--out", str(res)]) == 0
    r = np.load(res)
    assert r["ids"].shape == (20, 5) and (np.diff(r["distances"], axis=1) >= 0).all()
    # A multi-index-hashing index gives the same answers (exact, same tie order).
    for extra in ([], ["--substrings", "2"]):
        assert main(["index", "--codes", str(db), "--out", str(tmp_path / "mih.idx"), "--kind", "mih", *extra]) == 0
        assert main(["search", "--index", str(tmp_path / "mih.idx"), "--codes", str(q), "-k", "5",
                     "--out", str(tmp_path / "mih.npz")]) == 0
        m2 = np.load(tmp_path / "mih.npz")
        assert (m2["ids"] == r["ids"]).all() and (m2["distances"] == r["distances"]).all()
    from deephash import Index
    assert Index.load(tmp_path / "mih.idx").kind == "mih"

    x = np.load(split_npz)["x_query"]
    np.save(tmp_path / "x.npy", x)
    assert main(["encode", "--model", str(run), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "x.codes.npz")]) == 0
    assert np.array_equal(np.load(tmp_path / "x.codes.npz")["codes"], np.load(q)["codes"])


def test_cli_resume_and_paper_recipe(tmp_path, split_npz, capsys):
    run = _train(tmp_path, split_npz, "--filter", "gcn", "--paper-recipe")
    first = json.loads((run / "metrics.json").read_text())["mAP@all"]
    assert "HAGCN gcn (paper recipe) 16b" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["model"]["method"] == "hagcn-paper"
    # Resuming a finished run re-evaluates the same model.
    run = _train(tmp_path, split_npz, "--filter", "gcn", "--paper-recipe", "--resume")
    assert json.loads((run / "metrics.json").read_text())["mAP@all"] == first
    # --method hagcn-paper is the same run.
    same = main(["train", "--method", "hagcn-paper", "--data", str(split_npz), "--bits", "16", "--epochs", "2",
                 "--batch-size", "32", "--filter", "gcn", "--out", str(tmp_path / "same"), "--no-progress"])
    assert same == 0 and json.loads((tmp_path / "same" / "metrics.json").read_text())["mAP@all"] == first


def test_cli_seed_compatible_is_a_deprecated_alias(tmp_path, split_npz, capsys):
    paper = _train(tmp_path / "a", split_npz, "--filter", "spline", "--paper-recipe")
    with pytest.warns(FutureWarning, match="--seed-compatible is deprecated.*--paper-recipe"):
        old = _train(tmp_path / "b", split_npz, "--filter", "spline", "--seed-compatible")
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (paper, old))
    assert a["loss_history"] == b["loss_history"] and a["mAP@all"] == b["mAP@all"]


def test_cli_refuses_options_a_method_does_not_take(tmp_path, split_npz, capsys):
    assert main(["train", "--paper-recipe", "--data", str(split_npz), "--bits", "16", "--anchors", "8",
                 "--out", str(tmp_path / "r")]) == 2
    assert "hagcn-paper has no option --anchors" in capsys.readouterr().err
    assert main(["train", "--method", "itq", "--filter", "gcn", "--data", str(split_npz), "--bits", "16",
                 "--out", str(tmp_path / "r")]) == 2
    assert "itq has no option --filter" in capsys.readouterr().err
    assert main(["train", "--method", "itq", "--paper-recipe", "--data", str(split_npz), "--bits", "16",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--paper-recipe" in capsys.readouterr().err


def test_cli_train_per_class(tmp_path, split_npz, blobs_npz, capsys):
    """--train-per-class N|all: the standard protocol's training items per class; bad values and data
    with its own split are refused (exit 2, one line)."""
    run = tmp_path / "r"
    assert main(["train", "--method", "itq", "--data", str(blobs_npz), "--bits", "8", "--train-per-class", "all",
                 "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train_per_class"] == "all"
    for bad in ("0", "-1", "x", "2.5"):
        with pytest.raises(SystemExit) as e:
            main(["train", "--data", str(blobs_npz), "--bits", "8", "--train-per-class", bad, "--out", str(run)])
        assert e.value.code == 2 and "--train-per-class" in capsys.readouterr().err
    assert main(["train", "--data", str(split_npz), "--bits", "8", "--train-per-class", "5", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deephash train: error:") and "holds its own split" in err[0]


def test_cli_encode_refuses_bad_embeddings(tmp_path, split_npz, capsys):
    run = _train(tmp_path, split_npz, "--filter", "gcn", "--anchors", "16")
    np.save(tmp_path / "wide.npy", np.zeros((3, 17), np.float32))
    assert main(["encode", "--model", str(run), "--input", str(tmp_path / "wide.npy"), "--out", str(tmp_path / "c.npz")]) == 2
    assert "wide.npy" in (err := capsys.readouterr().err) and "17 dimensions" in err and "16" in err
    np.save(tmp_path / "nan.npy", np.full((3, 16), np.nan, np.float32))
    assert main(["encode", "--model", str(run), "--input", str(tmp_path / "nan.npy"), "--out", str(tmp_path / "c.npz")]) == 2
    assert "nan.npy" in (err := capsys.readouterr().err) and "non-finite" in err


def test_cli_demo(tmp_path, split_npz, capsys):
    rc = main(["demo", "--data", str(split_npz), "--bits", "16", "--anchors", "16", "--out", str(tmp_path / "demo"),
               "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "LSH 16b" in out and "HAGCN chebyshev 16b" in out
    assert (tmp_path / "demo" / "pr_curve.png").is_file()
    d = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert set(d) >= {"hagcn", "lsh"}


def test_cli_refuses_bad_input(tmp_path, split_npz, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--data", str(split_npz), "--bits", "4", "--out", str(tmp_path / "r")])
    assert "8..1024" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.array([[1.0, np.nan], [0.0, 1.0]]), y=np.array([0, 1]))
    assert main(["train", "--data", str(bad), "--bits", "8", "--out", str(tmp_path / "r")]) == 2
    assert "bad.npz" in capsys.readouterr().err
    junk = tmp_path / "junk.idx"
    junk.write_bytes(b"\0" * 100)
    q = tmp_path / "q.npz"
    np.savez(q, codes=np.zeros((1, 2), np.uint8), bits=np.int64(16), ids=np.zeros(1, np.int64))
    assert main(["search", "--index", str(junk), "--codes", str(q)]) == 2
    assert "junk.idx" in capsys.readouterr().err


def test_embed_without_weights_or_torchvision(tmp_path, capsys):
    (tmp_path / "img" / "a").mkdir(parents=True)
    (tmp_path / "img" / "a" / "0.png").write_bytes(b"")  # the paths are checked before the backbone loads
    rc = main(["embed", "--images", str(tmp_path / "img"), "--out", str(tmp_path / "e.npz")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "torchvision" in err or "--weights" in err


def test_embed_untrained_backbone(tmp_path):
    pytest.importorskip("torchvision")
    image_folder(tmp_path / "img", per_class=2, size=40)
    rc = main(["embed", "--images", str(tmp_path / "img"), "--out", str(tmp_path / "e.npz"), "--untrained",
               "--arch", "resnet18", "--image-size", "64"])
    assert rc == 0
    z = np.load(tmp_path / "e.npz")
    assert z["x"].shape[0] == 4 and z["y"].tolist() == [0, 0, 1, 1] and np.isfinite(z["x"]).all()


def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "deephash", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "demo" in r.stdout


@pytest.mark.slow
def test_fashion_mnist_demo_quality(tmp_path):
    """The README's main job: default HAGCN at 64 bits on the standard protocol beats ITQ (0.712 / 0.492)."""
    rc = main(["demo", "--out", str(tmp_path / "demo"), "--no-progress"])
    assert rc == 0
    d = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert d["hagcn"]["mAP@1000"] >= 0.74 and d["hagcn"]["mAP@1000"] > d["lsh"]["mAP@1000"]
    assert d["hagcn"]["mAP@all"] >= 0.50


def test_cli_resume_after_kill_matches_uninterrupted(tmp_path, split_npz):
    import signal
    import time

    import torch

    args = ["train", "--method", "hagcn-net", "--data", str(split_npz), "--bits", "16", "--epochs", "20",
            "--batch-size", "32", "--anchors", "16", "--filter", "spline", "--seed", "5", "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "deephash", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(killed / "checkpoint.pt", weights_only=True)
    if ckpt["epoch"] >= 20:
        pytest.skip("the run finished before it could be killed")
    assert not (killed / "metrics.json").exists()
    assert main([*args, "--out", str(killed), "--resume"]) == 0
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    a = json.loads((killed / "metrics.json").read_text())
    b = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert a["loss_history"] == b["loss_history"]
    assert a["mAP@all"] == b["mAP@all"] and a["P@r2"] == b["P@r2"]
