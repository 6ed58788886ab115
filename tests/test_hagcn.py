"""HAGCN's networks (the autoencoder and the paper recipe), their training as the methods ``hagcn-net``
and ``hagcn-paper``, checkpoint and resume, model files old and new. The default ``hagcn``:
test_hagcn_projection.py."""
from pathlib import Path

import numpy as np
import pytest
import torch

import deephash_ext
from deephash.models import graphs
from deephash.methods import METHODS, HashMethod, get_method, load_model
from deephash.methods.hagcn import NetworkHAGCN, PaperHAGCN
from deephash.models.hagcn import FILTERS, HAGCNNet
from deephash.training.run import Checkpoint

from conftest import Killed, kill_after, make_blobs

CONFIGS = [(f, paper) for f in FILTERS for paper in (False, True)]
DATA = Path(__file__).parent / "data"


def _tiny(filt, paper, bits=16, epochs=2, seed=0, **kw):
    """A small ``hagcn-net`` / ``hagcn-paper`` method (``kw``: more options)."""
    opts = dict(filter=filt, epochs=epochs, batch_size=32, hidden=32)
    if paper:
        if filt != "gcn":  # gcn has no order (given, it is refused)
            opts.update(order=4)
    else:
        opts.update(anchors=16)
        if filt in ("fourier", "lanczos", "spline"):
            opts.update(order={"fourier": 6, "lanczos": 5, "spline": 5}[filt])
    opts.update(kw)
    return get_method("hagcn-paper" if paper else "hagcn-net", bits, seed=seed, **opts)


@pytest.mark.parametrize("filt, paper", CONFIGS)
def test_shapes_and_codes(filt, paper, blobs):
    x, _ = blobs
    model, targets = _tiny(filt, paper).build(x)
    xb = torch.tensor(x[:32])
    out = model.forward_train(xb, generator=torch.Generator().manual_seed(0))
    assert out["recon"].shape == (32, 16) and out["logits"].shape == (32, 16)
    loss, parts = model.loss(out, None if targets is None else targets[:32])
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    if not paper:
        assert targets.shape == (len(x), 16) and set(targets.unique().tolist()) <= {-1.0, 1.0}
    codes = model.encode(x)
    assert codes.shape == (len(x), 16) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    # An item's code does not depend on the other items encoded with it.
    assert torch.equal(model.encode(x[5:6]), codes[5:6])


@pytest.mark.parametrize("filt", ["chebyshev", "spline", "fourier", "lanczos"])
def test_spectral_filters_go_through_the_op(filt, blobs, monkeypatch):
    x, _ = blobs
    calls = []
    real = deephash_ext.spectral_filter

    def spy(*a, **k):
        calls.append(a[3])
        return real(*a, **k)

    monkeypatch.setattr(deephash_ext, "spectral_filter", spy)
    for paper in (False, True):
        if paper and filt == "lanczos":
            continue
        model, _ = _tiny(filt, paper).build(x)
        model.forward_train(torch.tensor(x[:32]))
    assert calls and set(calls) <= {"chebyshev", "spline", "fourier"}


def test_subgraphs_use_a_batch_of_graphs(blobs, monkeypatch):
    x, _ = blobs
    shapes = []
    real = deephash_ext.normalized_laplacian
    monkeypatch.setattr(deephash_ext, "normalized_laplacian", lambda A: (shapes.append(tuple(A.shape)), real(A))[1])
    model, _ = _tiny("chebyshev", False, subgraphs=4).build(x)
    model.forward_train(torch.tensor(x[:32]))
    assert shapes == [(4, 8 + 16, 8 + 16)]


def test_ops_and_references_agree(blobs):
    if not hasattr(deephash_ext.reference, "spectral_filter"):
        pytest.skip("deephash_ext.reference has no spectral_filter")
    x, _ = blobs
    model, _ = _tiny("spline", False).build(x)
    xb = torch.tensor(x[:32])
    a = model.forward_train(xb)["recon"]
    graphs.set_backend("reference")
    try:
        b = model.forward_train(xb)["recon"]
    finally:
        graphs.set_backend("ops")
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("filt, paper, ratio", [("chebyshev", False, 0.85), ("gcn", False, 0.85),
                                                ("fourier", True, 0.95)])
def test_training_lowers_the_loss(filt, paper, ratio):
    x, _ = make_blobs(n_per_class=48, seed=2)
    hist = _tiny(filt, paper, epochs=20, lr=3e-3).fit(x).history
    assert hist[-1] < ratio * hist[0], hist


def test_training_learns_the_graph_codes():
    x, _ = make_blobs(n_per_class=48, seed=3)
    method = _tiny("chebyshev", False, epochs=20, lr=3e-3)
    untrained, targets = method.build(x)
    before = (untrained.encode(x) == targets).float().mean()
    after = (method.fit(x).encode(x) == targets).float().mean()
    assert after > before + 0.15, (before, after)


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    x, _ = make_blobs(n_per_class=24, seed=4)
    full = _tiny("lanczos", False, epochs=3, seed=7).fit(x, checkpoint=Checkpoint(tmp_path / "a" / "checkpoint.pt"))
    with pytest.raises(Killed):
        _tiny("lanczos", False, epochs=3, seed=7).fit(
            x, checkpoint=Checkpoint(tmp_path / "b" / "checkpoint.pt", on_epoch=kill_after(1)))
    resumed = _tiny("lanczos", False, epochs=3, seed=7).fit(
        x, checkpoint=Checkpoint(tmp_path / "b" / "checkpoint.pt", resume=True))
    assert resumed.history == full.history
    for (k, a), (_, b) in zip(full.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="another configuration"):
        _tiny("lanczos", False, epochs=3, seed=7, lr=0.5).fit(
            x, checkpoint=Checkpoint(tmp_path / "b" / "checkpoint.pt", resume=True))


def test_seed_determinism_and_save_load(tmp_path, blobs):
    x, _ = blobs
    a = _tiny("spline", True, epochs=1, seed=3).fit(x)
    b = _tiny("spline", True, epochs=1, seed=3).fit(x)
    assert torch.equal(a.encode(x), b.encode(x))
    a.save(tmp_path / "m.pt")
    assert torch.equal(load_model(tmp_path / "m.pt").encode(x), a.encode(x))


@pytest.mark.parametrize("paper", [False, True])
def test_hagcn_is_a_method(paper, blobs, tmp_path):
    x, y = blobs
    name = "hagcn-paper" if paper else "hagcn-net"
    assert METHODS[name] is (PaperHAGCN if paper else NetworkHAGCN) and not METHODS[name].supervised
    m = _tiny("gcn", paper, seed=2)
    assert isinstance(m, HashMethod) and m.config["in_dim"] is None
    codes = m.fit(x).encode(x)
    assert codes.shape == (len(x), 16) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert m.in_dim == 16 and m.config["method"] == name and m.config["filter"] == "gcn"
    assert m.config["hidden"] == 32 and m.label.startswith("HAGCN gcn") and ("paper" in m.label) == paper
    m.save(tmp_path / "m.pt")
    for loader in (METHODS[name].load, HashMethod.load, load_model):
        back = loader(tmp_path / "m.pt")
        assert type(back) is type(m) and back.seed == 2 and back.get_options() == m.get_options()
        assert torch.equal(back.encode(x), codes)
    other = "hagcn-net" if paper else "hagcn-paper"
    with pytest.raises(ValueError, match="not"):
        METHODS[other].load(tmp_path / "m.pt")


@pytest.mark.parametrize("name, cls", [("default", NetworkHAGCN), ("paper", PaperHAGCN)])
def test_model_files_of_0_1_0_still_load(name, cls):
    """Files written by deephash 0.1.0 (commit 01bcaa5: ``train.fit`` on ``make_blobs(n_per_class=10)``,
    seed 3, one epoch, batch 16, hidden 16, then ``train.save_model``; format "deephash.HAGCN", the paper
    recipe then marked ``seed_compatible=True``) give the codes that version gave (``x`` and codes in the npz)."""
    blob = torch.load(DATA / f"hagcn-0.1.0-{name}.pt", weights_only=True)
    assert blob["format"] == "deephash.HAGCN" and blob["config"]["seed_compatible"] == (cls is PaperHAGCN)
    ref = np.load(DATA / "hagcn-0.1.0-codes.npz")
    for loader in (load_model, HashMethod.load, cls.load):
        m = loader(DATA / f"hagcn-0.1.0-{name}.pt")
        assert type(m) is cls and m.in_dim == 16 and m.bits == 16
        assert np.array_equal(m.encode(ref["x"]).numpy(), ref[name].astype(np.float32))
    with pytest.raises(ValueError, match="not"):
        METHODS["itq"].load(DATA / f"hagcn-0.1.0-{name}.pt")


def test_graph_helpers():
    g = torch.Generator().manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(2, 20, 5, generator=g), dim=-1)
    A = graphs.knn_adjacency(f, 3)
    assert torch.equal(A, A.transpose(-1, -2)) and (A.diagonal(dim1=-2, dim2=-1) == 0).all()
    assert (A.sum(-1) >= 3).all()
    L = graphs.normalized_laplacian(A)
    V, T = graphs.lanczos(L, 6, torch.rand(2, 20, generator=g))
    torch.testing.assert_close(V.transpose(-1, -2) @ V, torch.eye(6).expand(2, 6, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(T, V.transpose(-1, -2) @ L @ V, atol=1e-5, rtol=0)
    M, S = graphs.paper_operator(torch.rand(1, 10, 4, generator=g))
    assert torch.allclose(M.sum(-1) * 0 + 1, torch.ones(1, 10)) and M.shape == (1, 10, 10)
    assert graphs.default_k(5000) == 13 and graphs.default_k(2) == 1


def test_bad_options(blobs):
    with pytest.raises(ValueError, match="8..1024"):
        HAGCNNet(16, 4)
    with pytest.raises(ValueError, match="unknown filter"):
        HAGCNNet(16, 16, "wavelet")
    with pytest.raises(TypeError, match="unknown HAGCN options"):
        HAGCNNet(16, 16, "gcn", anchorz=3)
    with pytest.raises(ValueError, match="8..1024"):
        get_method("hagcn-net", 4)
    with pytest.raises(ValueError, match="unknown filter"):
        get_method("hagcn-net", 16, filter="wavelet")
    with pytest.raises(TypeError, match="unknown option"):
        get_method("hagcn-paper", 16, anchors=3)  # the paper's graph has no anchors
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        get_method("hagcn-net", 16, epochs=0).fit(blobs[0])
