"""The hashing methods of deephash.methods: fit/encode on tiny data, balance, save/load, labels,
hybridhash's image check, SH's modes, SHC's center distances, resume, the comparison command and the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import Killed, kill_after, make_blobs
from deephash import metrics
from deephash.cli import main as cli_main
from deephash.methods import METHODS, HashMethod, get_method
from deephash.methods.bihalf import bihalf
from deephash.methods.csq import hadamard, hadamard_centers
from deephash.methods.shc import pairwise_hamming, repair_centers
from deephash.training.run import Checkpoint, train_and_evaluate

REPO = Path(__file__).resolve().parent.parent
EMBEDDING_METHODS = [m for m in METHODS if m != "hybridhash"]
DEEP_FAST = {"epochs": 8, "hidden": 64, "batch_size": 40}
HAGCN_FAST = {"epochs": 8, "hidden": 64, "batch_size": 40}


def _make(name, bits, **kw):
    opts = dict(DEEP_FAST) if name in ("dsh", "hashnet", "bihalf", "csq", "shc") else {}
    if name == "shc":
        opts["center_steps"] = 100
    if name in ("hagcn-net", "hagcn-paper"):
        opts = dict(HAGCN_FAST, **({"anchors": 16} if name == "hagcn-net" else {"order": 6}))
    opts.update(kw)
    return get_method(name, bits, **opts)


def _map(codes, y):
    return metrics.mean_average_precision(codes, codes, y, y, k=0)


@pytest.fixture(scope="module")
def data():
    x, y = make_blobs(n_per_class=20, classes=8, dim=32, seed=3, spread=0.2)
    return x, y


@pytest.mark.parametrize("name", EMBEDDING_METHODS)
def test_fit_encode_and_retrieve(name, data):
    x, y = data
    m = _make(name, 16).fit(x, y if METHODS[name].supervised else None)
    c = m.encode(x)
    assert c.shape == (len(x), 16) and c.dtype == torch.float32
    assert set(torch.unique(c).tolist()) <= {-1.0, 1.0}
    # 8 separated clusters: chance is about 0.125; supervised methods must use the labels
    assert _map(c, y) > (0.85 if m.supervised else 0.5), name
    assert m.config["in_dim"] == 32 and m.config["method"] == name


@pytest.mark.parametrize("name", EMBEDDING_METHODS)
def test_save_load_round_trip(name, data, tmp_path):
    x, y = data
    m = _make(name, 16, seed=5).fit(x, y if METHODS[name].supervised else None)
    p = tmp_path / f"{name}.pt"
    m.save(p)
    for loader in (METHODS[name].load, HashMethod.load):
        m2 = loader(p)
        assert type(m2) is type(m) and m2.bits == 16 and m2.seed == 5
        assert m2.get_options() == m.get_options()
        assert torch.equal(m2.encode(x), m.encode(x))
    other = next(n for n in EMBEDDING_METHODS if n != name)
    with pytest.raises(ValueError, match="not"):
        METHODS[other].load(p)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks loading where there is no CUDA")
@pytest.mark.parametrize("name", ["dsh", "hagcn-net", "hagcn"])
def test_a_model_trained_on_a_gpu_loads_on_the_cpu(name, data, tmp_path):
    x, y = data
    m = _make(name, 16, seed=5).fit(x, y if METHODS[name].supervised else None)
    p = tmp_path / "m.pt"
    m.save(p)
    blob = torch.load(p, weights_only=True)
    assert "device" in blob["options"]
    blob["options"]["device"] = "cuda:0"  # as written by a run with --device cuda
    torch.save(blob, p)
    with pytest.warns(UserWarning, match="runs on the CPU"):
        m2 = HashMethod.load(p)
    assert m2.device == "cpu" and torch.equal(m2.encode(x), m.encode(x))


@pytest.mark.parametrize("name", [n for n, c in METHODS.items() if c.supervised])
def test_supervised_methods_refuse_missing_labels(name, data):
    x, _ = data
    if name == "hybridhash":
        x = np.random.default_rng(0).random((8, 784), dtype=np.float32)
    with pytest.raises(ValueError, match=f"{name} is a supervised method"):
        _make(name, 16).fit(x)
    with pytest.raises(ValueError, match="rows"):
        _make(name, 16).fit(x, np.zeros(len(x) - 1, dtype=np.int64))


def test_supervised_flags():
    assert {n for n, c in METHODS.items() if c.supervised} == {"dsh", "hashnet", "csq", "shc", "hybridhash"}


@pytest.mark.parametrize("name", ["dsh", "csq", "hashnet"])
def test_multi_hot_labels(name, data):
    x, y = data
    multi = np.eye(8, dtype=np.uint8)[y]
    multi[::5, (y[::5] + 1) % 8] = 1  # some items carry two labels
    c = _make(name, 16).fit(x, multi).encode(x)
    assert _map(c, multi) > 0.6


def test_deep_methods_are_deterministic(data):
    x, y = data
    a = _make("dsh", 16, seed=1).fit(x, y).encode(x)
    b = _make("dsh", 16, seed=1).fit(x, y).encode(x)
    c = _make("dsh", 16, seed=2).fit(x, y).encode(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_threads_option_is_restored(data):
    x, y = data
    before = torch.get_num_threads()
    _make("csq", 16, threads=1, epochs=1).fit(x, y)
    assert torch.get_num_threads() == before


def test_unknown_method_and_option():
    with pytest.raises(ValueError, match="unknown method"):
        get_method("nope", 16)
    with pytest.raises(TypeError, match="unknown option"):
        get_method("itq", 16, epochs=3)


def test_bihalf_layer_and_codes_are_balanced(data):
    u = torch.randn(9, 5)
    b = bihalf(u)
    assert (b.sum(0) == 1).all()  # 5 of 9 are +1 in every column
    assert torch.equal(b[:, 0] > 0, u[:, 0] >= u[:, 0].median())
    x, _ = data
    c = _make("bihalf", 16).fit(x).encode(x)
    assert c.mean(0).abs().max() <= 2 / len(x) + 1e-6  # each bit split at its training median


def test_itq_codes_are_balanced_and_rotation_orthogonal():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(600, 32)) * np.linspace(3, 0.5, 32)).astype(np.float32) + 5
    m = get_method("itq", 16).fit(x)
    c = m.encode(x)
    assert c.mean(0).abs().max() < 0.15
    _, w, _ = __import__("deephash.methods.base", fromlist=["pca"]).pca(torch.as_tensor(x), 16)
    r = w.T @ m.proj  # W^T W R = R
    assert torch.allclose(r.T @ r, torch.eye(16), atol=1e-4)
    # ITQ's quantisation loss is below PCAH's (ITQ starts from a random rotation and only decreases it)
    v = (torch.as_tensor(x) - m.mean) @ w
    loss_itq = ((c - v @ r) ** 2).sum()
    loss_pca = ((torch.sign(v) - v) ** 2).sum()
    assert loss_itq < loss_pca


def test_pcah_and_itq_refuse_too_many_bits():
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    for name in ("pcah", "itq"):
        with pytest.raises(ValueError, match="bits need"):
            get_method(name, 16).fit(x)


def test_sh_takes_the_lowest_frequency_modes():
    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(0, 2, 4000), rng.uniform(0, 1, 4000)], 1).astype(np.float32)
    x = np.concatenate([x, rng.normal(size=(4000, 6)).astype(np.float32) * 1e-3], 1)
    m = get_method("sh", 8).fit(x)
    # widths ~2 and ~1: frequencies m/width = 0.5, 1 (dim 0), 1 (dim 1), 1.5 (dim 0), ...
    omega_over_pi = (m.omega / np.pi).tolist()
    assert m.dims[:4].tolist() in ([0, 0, 1, 0], [0, 1, 0, 0])
    assert np.allclose(sorted(omega_over_pi[:4]), [0.5, 1.0, 1.0, 1.5], atol=0.03)
    # the first bit splits the long direction at its middle
    c = m.encode(x)
    pc = (torch.as_tensor(x) - m.mean) @ m.proj
    assert ((c[:, 0] > 0) == (pc[:, 0] < (pc[:, 0].min() + pc[:, 0].max()) / 2)).float().mean() > 0.99


def test_csq_hadamard_centers():
    h = hadamard(16)
    assert torch.equal(h @ h.T, 16 * torch.eye(16))
    c = hadamard_centers(10, 16, 0)
    d = pairwise_hamming(c) + torch.eye(10) * 99
    assert d.min() >= 8
    r = hadamard_centers(10, 12, 0)  # not a power of two: random centers
    assert r.shape == (10, 12) and set(r.unique().tolist()) == {-1.0, 1.0}


def test_shc_centers_keep_the_minimum_distance(data):
    x, y = data
    m = _make("shc", 16, d_min=6).fit(x, y)
    d = pairwise_hamming(m.centers) + torch.eye(8) * 99
    assert d.min() >= 6
    s = m.class_similarity
    assert s.shape == (8, 8) and (s >= 0).all() and (s <= 1).all() and torch.allclose(s, s.T)
    close = torch.ones(6, 16)
    close[1:, :1] = -1  # six centers one bit apart
    fixed = repair_centers(close, 4)
    assert (pairwise_hamming(fixed) + torch.eye(6) * 99).min() >= 4


def test_hybridhash_on_images_and_refuses_embeddings(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 12)
    x = rng.random((24, 784), dtype=np.float32) * 0.2
    x[y == 1, :392] += 0.8  # class 1: bright top half
    m = get_method("hybridhash", 16, epochs=4, batch_size=8)
    m.fit(x, y)
    c = m.encode(x)
    assert c.shape == (24, 16)
    assert _map(c, y) > 0.6
    p = tmp_path / "hh.pt"
    m.save(p)
    assert torch.equal(HashMethod.load(p).encode(x), c)
    with pytest.raises(ValueError, match="not a known image size"):
        get_method("hybridhash", 16).fit(rng.random((24, 16), dtype=np.float32), y)
    with pytest.raises(ValueError, match="does not match"):
        get_method("hybridhash", 16, image_shape=(1, 10, 10)).fit(x, y)


def test_comparison_command_end_to_end(tmp_path, split_npz):
    out, plot, js = tmp_path / "table.md", tmp_path / "pr.png", tmp_path / "rows.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_methods.py"), "--data", str(split_npz),
                        "--bits", "8", "16", "--epochs", "2", "--output", str(out), "--plot", str(plot),
                        "--json", str(js)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(js.read_text())
    rows = result["rows"]
    assert len(rows) == 2 * len(METHODS)
    by = {(r["method"], r["bits"]): r for r in rows}
    assert "not a known image size" in by[("hybridhash", 16)]["error"]
    for name in EMBEDDING_METHODS:
        r16 = by[(name, 16)]
        for k in ("mAP@1000", "mAP@all", "mAP@all-tie-aware", "P@r2"):
            assert 0.0 <= r16[k] <= 1.0
        assert r16["train_s"] >= 0
    text = out.read_text()
    assert "| itq | 16 |" in text and "torch" in text and "command" in text
    assert plot.stat().st_size > 1000
    curves = result["pr_curves"]
    assert set(curves) == set(EMBEDDING_METHODS) and len(curves["itq"]["precision"]) == 17
    assert "| csq | 8 |" in r.stdout


@pytest.mark.parametrize("name", ["itq", "csq"])
def test_cli_train_method_and_encode(name, tmp_path, split_npz, capsys):
    run = tmp_path / "run"
    extra = ["--epochs", "3"] if name == "csq" else []
    assert cli_main(["train", "--method", name, "--data", str(split_npz), "--bits", "16", "--out", str(run), *extra]) == 0
    assert f"{name} 16b" in capsys.readouterr().out
    for f in ("model.pt", "config.json", "metrics.json", "pr_curve.png"):
        assert (run / f).is_file()
    m = json.loads((run / "metrics.json").read_text())
    assert m["mAP@all"] > 0.5
    q, db = tmp_path / "q.npz", tmp_path / "db.npz"
    assert cli_main(["encode", "--model", str(run), "--data", str(split_npz), "--split", "query", "--out", str(q)]) == 0
    assert cli_main(["encode", "--model", str(run), "--data", str(split_npz), "--split", "db", "--out", str(db)]) == 0
    assert cli_main(["eval", "--query", str(q), "--db", str(db), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert abs(ev["mAP@1000"] - m["mAP@1000"]) < 1e-12


def test_cli_method_options_are_checked(tmp_path, split_npz, capsys):
    assert cli_main(["train", "--method", "itq", "--data", str(split_npz), "--bits", "16", "--epochs", "3",
                     "--out", str(tmp_path / "r")]) == 2
    assert "itq has no option --epochs" in capsys.readouterr().err


def test_only_training_labels_reach_the_method(tmp_path, split_npz):
    from deephash.data import load_data

    split = load_data(split_npz)
    first, _ = train_and_evaluate(split, get_method("csq", 16, epochs=2), tmp_path / "a")
    rng = np.random.default_rng(0)
    split.y_db = rng.permutation(split.y_db)  # scrambled evaluation labels: same model, other metrics
    split.y_query = rng.permutation(split.y_query)
    train_and_evaluate(split, get_method("csq", 16, epochs=2), tmp_path / "b")
    a, b = HashMethod.load(tmp_path / "a" / "model.pt"), HashMethod.load(tmp_path / "b" / "model.pt")
    assert torch.equal(a.encode(split.x_db), b.encode(split.x_db))
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["mAP@all"] < first["mAP@all"]


@pytest.mark.parametrize("name", ["dsh", "shc"])
def test_deep_methods_resume_after_interruption(name, data, tmp_path):
    """Dropout, the batch order and Adam's state survive a kill: the resumed run ends as a whole one."""
    x, y = data
    whole = _make(name, 16, epochs=3, seed=4).fit(x, y, checkpoint=Checkpoint(tmp_path / "a.pt"))
    with pytest.raises(Killed):
        _make(name, 16, epochs=3, seed=4).fit(x, y, checkpoint=Checkpoint(tmp_path / "b.pt",
                                                                         on_epoch=kill_after(1)))
    assert torch.load(tmp_path / "b.pt", weights_only=True)["epoch"] == 1
    resumed = _make(name, 16, epochs=3, seed=4).fit(x, y, checkpoint=Checkpoint(tmp_path / "b.pt", resume=True))
    assert resumed.history == whole.history
    assert torch.equal(resumed.outputs(x), whole.outputs(x))
    with pytest.raises(ValueError, match="another configuration"):
        _make(name, 16, epochs=3, seed=5).fit(x, y, checkpoint=Checkpoint(tmp_path / "b.pt", resume=True))


def test_run_directory_of_a_deep_method_resumes(tmp_path, split_npz):
    from deephash.data import load_data

    split = load_data(split_npz)
    whole, _ = train_and_evaluate(split, get_method("dsh", 16, epochs=3), tmp_path / "whole")
    with pytest.raises(Killed):
        train_and_evaluate(split, get_method("dsh", 16, epochs=3), tmp_path / "run", on_epoch=kill_after(1))
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and not (tmp_path / "run" / "metrics.json").exists()
    resumed, _ = train_and_evaluate(split, get_method("dsh", 16, epochs=3), tmp_path / "run", resume=True)
    assert resumed["loss_history"] == whole["loss_history"] and len(whole["loss_history"]) == 3
    assert resumed["mAP@all"] == whole["mAP@all"]


def test_checkpoint_save_is_atomic(tmp_path):
    from deephash.training.run import Checkpoint

    run = tmp_path / "run"
    ck = Checkpoint(run / "checkpoint.pt", resume=True)
    ck.save({"a": 1}, 0, 1, [0.5], model={"w": torch.ones(2)})
    with pytest.raises(Exception):  # a save that fails half-way (torch.save cannot pickle a lambda)
        ck.save({"a": 1}, 0, 2, [0.5, 0.4], model=lambda: None)
    assert ck.restore({"a": 1}, 0)["epoch"] == 1  # the previous checkpoint, whole
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]  # no temporary left behind
