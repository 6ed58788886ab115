"""Data-parallel training on torch.distributed (gloo, 2 local processes on 127.0.0.1): a 2-rank step's
gradients equal the one-process gradients on the union batch; a short 2-rank training run gives the
one-process model; resume works; rank 0 alone writes files; the torchrun command line."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_blobs
from ddp_cases import flat_state, load_split, one_step_gradients, train_run
from deephash.training.data_parallel import ONE_PROCESS, DataParallel, DataParallelError, split_sizes
import ranks
from ranks import env

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"

# float64 throughout; what is left is summation order (a rank's encoder runs on its rows, the gathered
# gradient is summed over ranks).
RTOL, ATOL = 1e-9, 1e-12

_DEEP = {"hidden": 32, "dropout": 0.0, "threads": 1}
CASES = {
    "dsh": {"method": "dsh", "bits": 16, "options": _DEEP},
    "hashnet": {"method": "hashnet", "bits": 16, "options": _DEEP},
    "bihalf": {"method": "bihalf", "bits": 16, "options": _DEEP},
    "csq": {"method": "csq", "bits": 16, "options": _DEEP},
    "hagcn-chebyshev": {"method": "hagcn-net", "bits": 16, "options": {"hidden": 32, "anchors": 8}},
    "hagcn-gcn-subgraphs": {"method": "hagcn-net", "bits": 16,
                            "options": {"filter": "gcn", "hidden": 32, "anchors": 8, "subgraphs": 2}},
    "hagcn-paper-lanczos": {"method": "hagcn-paper", "bits": 16, "options": {"filter": "lanczos", "order": 6}},
}


def _data():
    x, y = make_blobs(n_per_class=40, classes=4, dim=16, seed=9)
    return x, y


def launch(cfg, world=2, deadline_s=240):
    """`world` ranks of tests/ddp_worker.py (tests/ranks.py)."""
    return ranks.launch(WORKER, world, cfg, deadline_s)


def test_split_sizes_and_one_process():
    assert split_sizes(37, 2) == [19, 18] and split_sizes(5, 3) == [2, 2, 1] and split_sizes(1, 2) == [1, 0]
    assert sum(split_sizes(1000, 7)) == 1000
    t = torch.randn(4, 3)
    assert ONE_PROCESS.gather(t) is t and ONE_PROCESS.rows(4) == slice(0, 4)
    with pytest.raises(DataParallelError, match="initialised torch.distributed process group"):
        DataParallel()


def test_two_rank_gradients_equal_one_process_on_the_union_batch(tmp_path):
    x, y = _data()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    # An odd global batch: rank 0 takes 19 rows, rank 1 takes 18.
    batch = torch.randperm(len(x), generator=torch.Generator().manual_seed(2))[:37].tolist()
    cases = {k: {**c, "batch": batch} for k, c in CASES.items()}
    out = launch({"job": "grads", "data": str(tmp_path / "d.npz"), "out": str(tmp_path), "timeout": 120,
                  "cases": cases})
    assert [c for c, _ in out] == [0, 0], out
    for name, case in cases.items():
        loss, ref = one_step_gradients(case, x, y)
        assert any(g.abs().max() > 0 for g in ref.values()), name
        for r in range(2):
            got = np.load(tmp_path / f"rank{r}.{name}.npz")
            assert got["loss"] == pytest.approx(loss, rel=RTOL), (name, r)
            assert set(got.files) - {"loss"} == set(ref), name
            for k, g in ref.items():
                torch.testing.assert_close(torch.from_numpy(got[k]), g, rtol=RTOL, atol=ATOL,
                                           msg=lambda m, name=name, k=k, r=r: f"{name} rank {r} {k}: {m}")


def _check_same(a: dict, b: dict, atol: float, rtol: float = 0.0, what: str = ""):
    fa, fb = flat_state(a), flat_state(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if fa[k].is_floating_point():
            torch.testing.assert_close(fa[k], fb[k], atol=atol, rtol=rtol, msg=lambda m, k=k: f"{what} {k}: {m}")
        else:
            assert torch.equal(fa[k], fb[k]), (what, k)


TRAIN = {
    "dsh": {"method": "dsh", "bits": 16, "options": {"hidden": 32, "dropout": 0.0, "epochs": 3, "batch_size": 30,
                                                      "threads": 1}},
    "hagcn": {"method": "hagcn-net", "bits": 16, "options": {"hidden": 32, "anchors": 8, "epochs": 3,
                                                         "batch_size": 25}},
    "shc": {"method": "shc", "bits": 16, "options": {"hidden": 32, "dropout": 0.0, "epochs": 2, "batch_size": 30,
                                                      "center_steps": 50, "threads": 1}},
    # The trained default HAGCN: each rank fits the same closed form, then trains on its rows of each batch
    # (the subgraph ops on its rows, the codes gathered for the loss); killed after its first training epoch
    # (its 2 closed-form passes count first).
    "hagcn-trained": {"method": "hagcn", "bits": 16, "options": {"anchors": 6, "epochs": 3, "batch_size": 25,
                                                                 "lr": 1e-3, "theta_lr": 0.05}, "kill_after": 3},
}
# BatchNorm takes each rank's batch statistics: the ranks agree, but not with one process.
RANKS_AGREE_ONLY = {
    "hybridhash": {"method": "hybridhash", "bits": 16, "options": {"image_shape": (1, 4, 4), "epochs": 2,
                                                                    "batch_size": 30, "threads": 1}},
}


def test_two_rank_training_equals_one_process_resumes_and_rank0_writes(tmp_path, split_npz):
    runs = [{"tag": k, "spec": s} for k, s in {**TRAIN, **RANKS_AGREE_ONLY}.items()]
    runs += [{"tag": f"{k}-resumed", "spec": s, "kill_after": s.get("kill_after", 1)} for k, s in TRAIN.items()]
    cfg = {"job": "train", "data": str(split_npz), "out": str(tmp_path), "timeout": 120, "runs": runs}
    out = launch(cfg)
    assert [c for c, _ in out] == [0, 0], out
    # Resuming under another configuration: rank 0 refuses the checkpoint, and rank 1 hears of it.
    assert "rank 0 mismatch: ValueError:" in out[0][1] and "another configuration" in out[0][1], out[0][1]
    assert "rank 1 mismatch: DataParallelError: rank 0: ValueError:" in out[1][1], out[1][1]
    split = load_split(split_npz)
    for tag in RANKS_AGREE_ONLY:
        _check_same(torch.load(tmp_path / f"rank0.{tag}.pt", weights_only=True),
                    torch.load(tmp_path / f"rank1.{tag}.pt", weights_only=True), 0.0, what=tag)
    for tag, spec in TRAIN.items():
        r0 = torch.load(tmp_path / f"rank0.{tag}.pt", weights_only=True)
        r1 = torch.load(tmp_path / f"rank1.{tag}.pt", weights_only=True)
        _check_same(r0, r1, 0.0, what=f"{tag}: rank 0 vs rank 1")  # the ranks hold the same model, bit for bit
        # Interrupted after epoch 1 and resumed from rank 0's checkpoint: the uninterrupted model exactly.
        _check_same(torch.load(tmp_path / f"rank0.{tag}-resumed.pt", weights_only=True), r0, 0.0,
                    what=f"{tag}: resumed vs whole")
        m0 = json.loads((tmp_path / f"rank0.{tag}.json").read_text())
        assert json.loads((tmp_path / f"rank1.{tag}.json").read_text()) == m0  # rank 0's result on every rank
        assert m0 == {k: v for k, v in json.loads((tmp_path / f"{tag}.rank0/metrics.json").read_text()).items()
                      if k not in ("train_seconds", "pr_curve")}
        # Rank 0 alone wrote: its run directory is complete, rank 1's (given another path) was never made.
        for f in ("model.pt", "config.json", "metrics.json", "pr_curve.png", "checkpoint.pt"):
            assert (tmp_path / f"{tag}.rank0" / f).is_file(), (tag, f)
        assert not (tmp_path / f"{tag}.rank1").exists()
        assert not (tmp_path / f"{tag}-resumed.rank1").exists()
        # The one-process run on the same data: the same model, up to float32 rounding over 3 epochs of Adam.
        one, metrics = train_run(spec, split, tmp_path / f"{tag}.one")
        _check_same(one.state_dict(), r0, atol=1e-6, rtol=1e-5, what=f"{tag}: 2 ranks vs 1 process")
        assert np.allclose(m0["loss_history"], metrics["loss_history"], rtol=1e-5, atol=1e-7)


def _finish(p, timeout=240):
    """torchrun's exit code and output; past the timeout it is stopped with SIGTERM, on which it stops
    its workers (they run in sessions of their own), then killed."""
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.terminate()
            try:
                p.communicate(timeout=30)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
    return p.returncode, out


EPOCHS = 30


def test_torchrun_train_resume_and_rank0_output(tmp_path, split_npz):
    args = ["--method", "hagcn-net", "--data", str(split_npz), "--bits", "16", "--epochs", str(EPOCHS),
            "--batch-size", "25", "--anchors", "8", "--seed", "5", "--no-progress", "--timeout", "120"]
    base = {k: v for k, v in env(2).items() if k != "WORLD_SIZE"}
    port = lambda: env(2)["MASTER_PORT"]  # noqa: E731
    launch_ = lambda *a: subprocess.Popen(  # noqa: E731
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", port(), "-m", "deephash", "train", *a], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True, env=base)

    code, out = _finish(launch_(*args, "--out", "whole"))
    assert code == 0, out
    assert out.count("wrote whole/model.pt") == 1 and "(2 ranks)" in out  # rank 0 alone reports
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["ranks"] == 2

    # Killed after a checkpoint (both ranks, started with the environment torchrun gives them, so that
    # this test holds their ids), then resumed under torchrun.
    e = env(2)
    procs = [subprocess.Popen([sys.executable, "-m", "deephash", "train", *args, "--out", "killed"], cwd=tmp_path,
                              env={**e, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for r in range(2)]
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 200
    try:
        while not ckpt.exists() and all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert ckpt.exists(), "no checkpoint was written"
    if torch.load(ckpt, weights_only=True)["epoch"] >= EPOCHS:
        pytest.skip("the run finished before it could be killed")
    assert not (tmp_path / "killed" / "metrics.json").exists()
    code, out = _finish(launch_(*args, "--out", "killed", "--resume"))
    assert code == 0, out
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert resumed["loss_history"] == whole["loss_history"]
    assert resumed["mAP@all"] == whole["mAP@all"]

    # A method that does not train data-parallel is refused: itq, and the default HAGCN's closed form
    # (epochs 0; it trains data-parallel with --epochs N > 0).
    for method, refusal in (("itq", "itq does not train data-parallel"),
                            ("hagcn", "hagcn: the closed form (epochs 0) fits in one process")):
        code, out = _finish(launch_(*args[2:6], "--method", method, "--out", method))
        assert code != 0 and f"deephash train: error: {refusal}" in out, out
