import numpy as np
import pytest
import torch

import deephash_ext
from deephash import graphs
from deephash.models.hagcn import FILTERS, HAGCN, default_config
from deephash.train import build_model, fit, load_model, save_model

from conftest import make_blobs

CONFIGS = [(f, sc) for f in FILTERS for sc in (False, True)]


def _tiny_cfg(filt, sc, bits=16, epochs=2, **kw):
    cfg = default_config(16, bits, filt, sc)
    cfg.update(epochs=epochs, batch_size=32, hidden=32)
    if sc:
        cfg.update(order=4)
    else:
        cfg.update(anchors=16, order={"fourier": 6, "lanczos": 5, "spline": 5}.get(filt, cfg["order"]))
    cfg.update(kw)
    return cfg


@pytest.mark.parametrize("filt, sc", CONFIGS)
def test_shapes_and_codes(filt, sc, blobs):
    x, _ = blobs
    model, targets = build_model(_tiny_cfg(filt, sc), x, seed=0)
    xb = torch.tensor(x[:32])
    out = model.forward_train(xb, generator=torch.Generator().manual_seed(0))
    assert out["recon"].shape == (32, 16) and out["logits"].shape == (32, 16)
    loss, parts = model.loss(out, None if targets is None else targets[:32])
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    if not sc:
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
    for sc in (False, True):
        if sc and filt == "lanczos":
            continue
        model, _ = build_model(_tiny_cfg(filt, sc), x, seed=0)
        model.forward_train(torch.tensor(x[:32]))
    assert calls and set(calls) <= {"chebyshev", "spline", "fourier"}


def test_subgraphs_use_a_batch_of_graphs(blobs, monkeypatch):
    x, _ = blobs
    shapes = []
    real = deephash_ext.normalized_laplacian
    monkeypatch.setattr(deephash_ext, "normalized_laplacian", lambda A: (shapes.append(tuple(A.shape)), real(A))[1])
    model, _ = build_model(_tiny_cfg("chebyshev", False, subgraphs=4), x, seed=0)
    model.forward_train(torch.tensor(x[:32]))
    assert shapes == [(4, 8 + 16, 8 + 16)]


def test_ops_and_references_agree(blobs):
    if not hasattr(deephash_ext.reference, "spectral_filter"):
        pytest.skip("deephash_ext.reference has no spectral_filter")
    x, _ = blobs
    model, _ = build_model(_tiny_cfg("spline", False), x, seed=0)
    xb = torch.tensor(x[:32])
    a = model.forward_train(xb)["recon"]
    graphs.set_backend("reference")
    try:
        b = model.forward_train(xb)["recon"]
    finally:
        graphs.set_backend("ops")
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("filt, sc, ratio", [("chebyshev", False, 0.85), ("gcn", False, 0.85),
                                             ("fourier", True, 0.95)])
def test_training_lowers_the_loss(filt, sc, ratio):
    x, _ = make_blobs(n_per_class=48, seed=2)
    _, hist = fit(_tiny_cfg(filt, sc, epochs=20, lr=3e-3), x, seed=0, progress=False)
    assert hist[-1] < ratio * hist[0], hist


def test_training_learns_the_graph_codes():
    x, _ = make_blobs(n_per_class=48, seed=3)
    cfg = _tiny_cfg("chebyshev", False, epochs=20, lr=3e-3)
    untrained, targets = build_model(cfg, x, seed=0)
    before = (untrained.encode(x) == targets).float().mean()
    model, _ = fit(cfg, x, seed=0, progress=False)
    after = (model.encode(x) == targets).float().mean()
    assert after > before + 0.15, (before, after)


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    x, _ = make_blobs(n_per_class=24, seed=4)
    cfg = _tiny_cfg("lanczos", False, epochs=3)
    full, h_full = fit(cfg, x, seed=7, run_dir=tmp_path / "a", progress=False)

    class Killed(Exception):
        pass

    def kill(epoch, model):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        fit(cfg, x, seed=7, run_dir=tmp_path / "b", progress=False, epoch_callback=kill)
    resumed, h_res = fit(cfg, x, seed=7, run_dir=tmp_path / "b", resume=True, progress=False)
    assert h_res == h_full
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="another configuration"):
        fit({**cfg, "lr": 0.5}, x, seed=7, run_dir=tmp_path / "b", resume=True, progress=False)


def test_seed_determinism_and_save_load(tmp_path, blobs):
    x, _ = blobs
    cfg = _tiny_cfg("spline", True, epochs=1)
    a, _ = fit(cfg, x, seed=3, progress=False)
    b, _ = fit(cfg, x, seed=3, progress=False)
    assert torch.equal(a.encode(x), b.encode(x))
    save_model(a, tmp_path / "m.pt")
    assert torch.equal(load_model(tmp_path / "m.pt").encode(x), a.encode(x))


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
    M, S = graphs.seed_operator(torch.rand(1, 10, 4, generator=g))
    assert torch.allclose(M.sum(-1) * 0 + 1, torch.ones(1, 10)) and M.shape == (1, 10, 10)
    assert graphs.default_k(5000) == 13 and graphs.default_k(2) == 1


def test_bad_options():
    with pytest.raises(ValueError, match="8..1024"):
        HAGCN(16, 4)
    with pytest.raises(ValueError, match="unknown filter"):
        HAGCN(16, 16, "wavelet")
    with pytest.raises(TypeError, match="unknown HAGCN options"):
        HAGCN(16, 16, "gcn", anchorz=3)
