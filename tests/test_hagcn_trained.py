"""The trained HAGCN (``hagcn`` with ``epochs`` > 0, deephash.models.trained_projection): it starts at the
closed form bit for bit, its gradient through the batched subgraph ops is right, θ stays a low-pass
filter, resume and batch independence hold, bad options are refused."""
import json
import math

import pytest
import torch

from deephash.models import graphs
from deephash.training.data_parallel import ONE_PROCESS
from deephash.methods import get_method, load_model
from deephash.methods.base import sign
from deephash.models import filtered_projection as fp
from deephash.models import trained_projection as tp
from deephash.training.run import Checkpoint

from conftest import Killed, kill_after, make_blobs

TRAIN = dict(epochs=3, batch_size=48, lr=1e-3, theta_lr=0.05)


@pytest.fixture(scope="module")
def data():
    x, _ = make_blobs(n_per_class=40, classes=6, dim=24, seed=5, spread=0.6)
    return torch.as_tensor(x)


@pytest.fixture(scope="module")
def closed(data):
    return get_method("hagcn", 16, seed=3).fit(data)


def _encoder(m, x, learn_theta=True):
    F = graphs.cosine_features(x.double(), m.mean.double())
    return tp.Encoder(m.W, m.R, m.anchor_z, F, m.fitted["anchors"], m.fitted["local_heat"], learn_theta), F


def test_step_zero_is_the_closed_form_bit_for_bit(data, closed):
    enc, F = _encoder(closed, data)
    assert torch.equal(enc.filter.theta(), fp.heat_theta("chebyshev", 0.5, fp.LOCAL_ORDER))
    h = enc(F, enc.bank())
    assert torch.equal(h, closed._project(data)[:, :16] @ closed.R.double())
    assert torch.equal(sign(h), closed.encode(data))
    # The subgraph filter with the heat kernel's θ is the closed form's, to the bit, on other items too.
    z = graphs.cosine_features(torch.randn(30, 24, dtype=torch.float64), closed.mean.double()) @ closed.W.double()
    anchors = closed.anchor_z.double()
    assert torch.equal(fp.subgraph_filter(z, anchors, 8, fp.heat_theta("chebyshev", 0.5, fp.LOCAL_ORDER)),
                       fp.local_filter(z, anchors, 8, 0.5))
    # epochs 0 is the closed form.
    assert torch.equal(get_method("hagcn", 16, seed=3, epochs=0).fit(data).encode(data), closed.encode(data))


def test_the_filter_starts_as_the_heat_kernel_and_interpolates_its_node_values():
    f = tp.MonotoneFilter(0.5)
    lam = f.nodes
    assert lam[0] == 0 and lam[-1] == 2 and (lam.diff() > 0).all()
    torch.testing.assert_close(f.values(), torch.exp(-0.5 * lam), rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        f.beta.add_(torch.linspace(-1, 2, f.beta.numel(), dtype=torch.float64))
    torch.testing.assert_close(tp.response(f.theta(), lam), f.values(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="local_heat must be > 0.05"):
        tp.MonotoneFilter(0.05)


def test_theta_stays_in_its_family_after_steps_with_big_gradients():
    torch.manual_seed(0)
    for push in ("all-pass", "high-pass", "random"):
        f = tp.MonotoneFilter(0.5)
        opt = torch.optim.SGD(f.parameters(), lr=1e3)
        for _ in range(50):
            g = tp.response(f.theta(), torch.linspace(0, 2, 33, dtype=torch.float64))
            if push == "all-pass":
                loss = -g.sum() * 1e3
            elif push == "high-pass":
                loss = (g[:16].sum() - g[16:].sum()) * 1e3
            else:
                loss = (torch.randn(33, dtype=torch.float64) * 1e4 * g).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            v = f.values()
            assert torch.isfinite(f.theta()).all() and torch.isfinite(v).all(), push
            # g(0) = 1, decreasing at every node (strictly, until exp underflows to 0), never negative
            assert v[0] == 1 and (v.diff() <= 0).all() and (v >= 0).all(), push
            assert v[-1] <= math.exp(-2 * tp.MIN_HEAT) + 1e-12, push  # never the all-pass filter
        torch.testing.assert_close(tp.response(f.theta(), f.nodes), f.values(), rtol=0, atol=1e-9)


def _small_encoder(seed=0):
    """A small model: 20 anchors of 10-d items, 8 bits, subgraphs of 4 nodes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(20, 10, generator=g, dtype=torch.float64)
    F = fp.unit(x)
    W = torch.randn(10, 8, generator=g, dtype=torch.float64) / 3
    R, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    enc = tp.Encoder(W, R, F @ W, F, 3, 0.5)
    with torch.no_grad():
        enc.filter.beta.add_(torch.rand(enc.filter.beta.shape, generator=g, dtype=torch.float64))
    return enc, F


def _loss(enc, F, W, R, beta, objective="neighbours"):
    """The objective of 4 pairs (distill: of 4 items) as a function of the parameters (gradcheck's inputs)."""
    for module, name, value in ((enc, "W", W), (enc, "R", R), (enc.filter, "beta", beta)):
        if name in module._parameters:  # plain tensors in place of the parameters: gradcheck's inputs
            delattr(module, name)
        setattr(module, name, value)
    P, Q = torch.tensor([0, 3, 5, 9]), torch.tensor([1, 4, 8, 2])
    nn_ = torch.tensor([[1], [0], [3], [4], [3], [8], [5], [6], [5], [2], *[[0]] * 10])
    bank = enc.bank()
    if objective == "distill":  # against a fixed teacher (tanh relaxation: straight-through has no derivative)
        teacher = fp.unit(torch.randn(20, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
        return tp.distill_loss(enc.relaxed(F[P], bank), teacher[P], slice(0, 4), ONE_PROCESS)
    bp, bq = enc.relaxed(F[P], bank), enc.relaxed(F[Q], bank)
    return tp.objective(bp, bq, tp.known_pairs(nn_, P, Q), slice(0, 4), ONE_PROCESS)


@pytest.mark.parametrize("objective", tp.OBJECTIVES)
def test_gradcheck_of_the_loss_through_the_subgraph_ops_and_against_the_references(objective):
    enc, F = _small_encoder()
    params = [enc.W.detach().clone().requires_grad_(), enc.R.detach().clone().requires_grad_(),
              enc.filter.beta.detach().clone().requires_grad_()]
    enc.scale.fill_(0.3)
    fn = lambda W, R, beta: _loss(enc, F, W, R, beta, objective)  # noqa: E731
    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-7, rtol=1e-5)
    ops = torch.autograd.grad(fn(*params), params)
    assert all(g.abs().max() > 0 for g in ops)  # the loss reaches W, R and θ
    graphs.set_backend("reference")
    try:
        ref = torch.autograd.grad(fn(*params), params)
    finally:
        graphs.set_backend("ops")
    for a, b in zip(ops, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_gradients_reach_the_laplacian_through_the_edge_weights(monkeypatch):
    """The subgraph's L depends on the model's features: normalized_laplacian's input has a gradient."""
    enc, F = _small_encoder(1)
    seen = []
    real = graphs.normalized_laplacian

    def spy(A):
        seen.append(A.requires_grad)
        return real(A)

    monkeypatch.setattr(graphs, "normalized_laplacian", spy)
    enc.scale.fill_(0.3)
    _loss(enc, F, enc.W, enc.R, enc.filter.beta).backward()
    assert seen and all(seen)


def _trained(data, **kw):
    return get_method("hagcn", 16, seed=3, **{**TRAIN, **kw}).fit(data)


def test_training_moves_the_model_and_the_filter(data, closed):
    m = _trained(data)
    assert m.history_is_loss and len(m.history) == 3 and all(math.isfinite(v) for v in m.history)
    rec = m.training
    assert len(rec["held_out"]) == 4 and rec["chosen"] == min(range(4), key=rec["held_out"].__getitem__)
    assert rec["g"][-1] != rec["g"][0]  # θ moved over the epochs
    assert set(m.encode(data).unique().tolist()) <= {-1.0, 1.0}
    r = m.filter_response
    assert r["before"][0] == pytest.approx(1) and r["after"][0] == pytest.approx(1, abs=1e-9)

    def kept(model, start=closed):  # the held-out criterion's epoch is the model: epoch 0 is the closed form
        if model.training["chosen"] == 0:
            return torch.equal(model.W, start.W) and torch.equal(model.encode(data), start.encode(data))
        return not torch.equal(model.W, start.W)

    # Ablations, one switch each: θ frozen at the heat kernel; no subgraph; and the other objective.
    frozen = _trained(data, freeze_theta=True)
    assert torch.equal(frozen.local_theta, fp.heat_theta("chebyshev", 0.5, 12))
    assert all(g == frozen.training["g"][0] for g in frozen.training["g"])
    flat = _trained(data, anchors=0)
    assert flat.local_theta is None and flat.anchor_z is None
    pairs = _trained(data, objective="neighbours", lr=1e-2)
    assert pairs.training["chosen"] > 0 and not torch.equal(pairs.W, m.W)
    assert kept(m) and kept(frozen) and kept(pairs)
    assert kept(flat, get_method("hagcn", 16, seed=3, anchors=0).fit(data))


def test_an_items_code_does_not_depend_on_what_else_is_encoded(data):
    m = _trained(data)
    codes = m.encode(data)
    assert torch.equal(torch.cat([m.encode(data[i:i + 1]) for i in range(len(data))]), codes)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    assert torch.equal(m.encode(data[perm]), codes[perm])
    assert torch.equal(m.encode(torch.cat([data[:3], torch.randn(50, 24)]))[:3], codes[:3])


def test_resume_after_a_kill_equals_an_uninterrupted_run(data, tmp_path):
    full = get_method("hagcn", 16, seed=7, **TRAIN).fit(data, checkpoint=Checkpoint(tmp_path / "a" / "c.pt"))
    for kill in (1, 3):  # after the first closed-form pass; after the first training epoch (2 passes + 1)
        path = tmp_path / f"k{kill}" / "c.pt"
        with pytest.raises(Killed):
            get_method("hagcn", 16, seed=7, **TRAIN).fit(data, checkpoint=Checkpoint(path, on_epoch=kill_after(kill)))
        resumed = get_method("hagcn", 16, seed=7, **TRAIN).fit(data, checkpoint=Checkpoint(path, resume=True))
        assert resumed.history == full.history and resumed.training == full.training, kill
        for key in ("W", "R", "anchor_z", "local_theta"):
            assert torch.equal(getattr(resumed, key), getattr(full, key)), (kill, key)
        assert torch.equal(resumed.encode(data), full.encode(data))
    with pytest.raises(ValueError, match="another configuration"):
        get_method("hagcn", 16, seed=7, **{**TRAIN, "lr": 0.5}).fit(
            data, checkpoint=Checkpoint(tmp_path / "k3" / "c.pt", resume=True))


def test_save_and_load_keep_the_trained_model(data, tmp_path):
    m = _trained(data)
    m.save(tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert torch.equal(back.local_theta, m.local_theta) and back.training == m.training
    assert torch.equal(back.encode(data), m.encode(data)) and back.config == m.config


def test_bad_options_are_refused(data):
    bad = [({"epochs": -1}, "epochs must be an integer >= 0"), ({"epochs": 1.5}, "epochs must be an integer"),
           ({"epochs": 2, "batch_size": 1}, "batch_size must be an integer >= 2"),
           ({"epochs": 2, "lr": 0}, "lr must be a finite number > 0"),
           ({"epochs": 2, "theta_lr": float("nan")}, "theta_lr must be a finite number > 0"),
           ({"epochs": 2, "freeze_theta": "yes"}, "freeze_theta must be True or False"),
           ({"epochs": 2, "objective": "labels"}, "objective must be one of distill, neighbours"),
           ({"epochs": 2, "local_heat": 0.04}, "local_heat must be > 0.05")]
    for opts, message in bad:
        with pytest.raises(ValueError, match=message):
            get_method("hagcn", 16, **opts).fit(data)


def test_train_from_the_cli(tmp_path, split_npz, capsys):
    from deephash.cli import main

    args = ["train", "--data", str(split_npz), "--bits", "16", "--anchors", "6", "--epochs", "2",
            "--batch-size", "30", "--theta-lr", "0.05"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in err] == ["HAGCN chebyshev 16b: pass 1/2", "HAGCN chebyshev 16b: pass 2/2",
                                                    "HAGCN chebyshev 16b (trained): epoch 1/2",
                                                    "HAGCN chebyshev 16b (trained): epoch 2/2"]
    assert "g(0, .5, 1, 1.5, 2) = 1.000 " in err[-1] and "held out" in err[-1]
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert len(m["loss_history"]) == 2 and m["filter_response"]["after"][0] == pytest.approx(1, abs=1e-9)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())["model"]
    assert cfg["epochs"] == 2 and cfg["theta_lr"] == 0.05 and cfg["freeze_theta"] is False
    assert main([*args, "--freeze-theta", "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model"]["freeze_theta"] is True
    for extra, message in ((["--theta-lr", "0"], "--theta-lr: must be a finite number > 0"),
                           (["--epochs", "-1"], "--epochs: must be >= 0")):
        with pytest.raises(SystemExit) as e:
            main([*args, *extra, "--out", str(tmp_path / "c")])
        assert e.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert message in lines[-1] and lines[-1].startswith("deephash train: error:")
