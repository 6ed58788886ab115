"""The default HAGCN (``hagcn``): the filtered-graph projection of deephash.models.filtered_projection."""
import math

import numpy as np
import pytest
import torch

import deephash_ext
from deephash.models import graphs
from deephash.methods import METHODS, HashMethod, get_method, load_model
from deephash.methods.hagcn import HAGCN
from deephash.models import filtered_projection as fp
from deephash.training.run import Checkpoint

from conftest import Killed, kill_after, make_blobs


@pytest.fixture(scope="module")
def data():
    x, y = make_blobs(n_per_class=40, classes=6, dim=24, seed=5, spread=0.6)
    return torch.as_tensor(x), y


def _fit(x, **kw):
    bits = kw.pop("bits", 16)
    return get_method("hagcn", bits, **kw).fit(x)


def test_is_the_default_method_and_refuses_what_it_does_not_take(data):
    # data-parallel: its training epochs (epochs > 0, tests/test_hagcn_trained.py); the closed form is one process
    assert METHODS["hagcn"] is HAGCN and not HAGCN.supervised and HAGCN.resumable and HAGCN.data_parallel
    with pytest.raises(TypeError, match="hidden"):
        get_method("hagcn", 16, hidden=3)
    with pytest.raises(ValueError, match="unknown filter 'wavelet'"):
        get_method("hagcn", 16, filter="wavelet")
    x, _ = data
    bad = [({"order": 3, "filter": "spline"}, "order must be an integer >= 4"),
           ({"order": 2, "filter": "gcn"}, "order does not apply to filter gcn"),
           ({"order": 2, "filter": "none"}, "order does not apply to filter none"),
           ({"order": 500, "filter": "fourier"}, "fourier filter keeps at most"),
           ({"knn": 0}, "knn must be an integer >= 1"), ({"knn": 240}, "knn=240"),
           ({"anchors": 240}, "anchors=240"), ({"anchors": -1}, "anchors must be"),
           ({"passes": 0}, "passes must be"), ({"heat": float("nan")}, "heat must be a finite number"),
           ({"local_heat": 0}, "local_heat must be"), ({"subgraphs": 100}, "subgraphs=100"),
           ({"knn": 2.5}, "knn must be an integer"), ({"bits": 32}, "32 bits need at least 32-d")]
    for opts, message in bad:
        with pytest.raises(ValueError, match=message):
            _fit(x, **opts)
    with pytest.raises(ValueError, match="at least 3 items"):
        _fit(x[:2])
    with pytest.raises(RuntimeError, match="before fit"):
        get_method("hagcn", 16).encode(x)
    m = _fit(x, filter="gcn")
    with pytest.raises(ValueError, match=r"expected items \[N, 24\]"):
        m.encode(x[:, :5])


@pytest.mark.parametrize("filt", fp.FILTERS)
def test_codes_are_pm1_deterministic_and_independent_of_the_batch(filt, data):
    x, _ = data
    a, b = _fit(x, filter=filt, seed=3), _fit(x, filter=filt, seed=3)
    codes = a.encode(x)
    assert codes.shape == (len(x), 16) and codes.dtype == torch.float32
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(codes, b.encode(x))  # same seed, same codes
    # An item's code depends on the item and the stored anchors only: alone, reordered, among others.
    assert torch.equal(a.encode(x[7:8]), codes[7:8])
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.encode(x[perm]), codes[perm])
    assert torch.equal(a.encode(torch.cat([x[:3], torch.randn(50, x.shape[1])]))[:3], codes[:3])
    assert a.encode(x[:0]).shape == (0, 16)
    # Every item alone, every one a training item (its own anchor is skipped): the batch's shape changes
    # float32 products in their last bits, which once reordered near-tied anchors.
    assert torch.equal(torch.cat([a.encode(x[i:i + 1]) for i in range(len(x))]), codes)
    torch.testing.assert_close(a._project(x, chunk=7), a._project(x), rtol=0, atol=1e-12)  # float64: last bits only


def test_the_filter_changes_the_codes_and_none_is_itq_on_unit_features(data):
    x, _ = data
    codes = {f: _fit(x, filter=f).encode(x) for f in fp.FILTERS}
    for f in fp.FILTERS:
        for g in fp.FILTERS:
            if f < g:
                assert not torch.equal(codes[f], codes[g]), (f, g)
    # none: every filter the identity -- the projection spans the principal directions of the unit features
    # (then ITQ), and there is no encoding subgraph.
    m = _fit(x, filter="none", seed=4)
    f = fp.unit(x - x.mean(0)).double()
    _, vecs = torch.linalg.eigh(f.T @ f)
    top = vecs.flip(1)[:, :16]
    w = m.W[:, :16].double()
    assert (w - top @ (top.T @ w)).norm() < 1e-4 * w.norm() and m.anchor_z is None
    # Its heat is irrelevant; for the others a different heat gives other codes.
    assert torch.equal(_fit(x, filter="none", heat=3.0).encode(x), _fit(x, filter="none").encode(x))
    assert not torch.equal(_fit(x, heat=3.0).encode(x), codes["chebyshev"])


def test_filtering_helps_on_clustered_data():
    """Clusters along curved manifolds: the graph's low-pass filter finds what PCA does not."""
    x, y = make_blobs(n_per_class=60, classes=8, dim=32, seed=11, spread=0.9)
    from deephash.metrics import mean_average_precision

    def score(m):
        c = m.encode(x)
        return mean_average_precision(c, c, y, y, 0)

    filtered, plain = score(_fit(x, bits=16)), score(_fit(x, bits=16, filter="none"))
    assert filtered > plain + 0.02, (filtered, plain)


@pytest.mark.parametrize("filt", ["chebyshev", "spline", "fourier", "lanczos"])
def test_every_eigendecomposition_goes_through_our_ops(filt, data, monkeypatch):
    x, _ = data
    calls = {"eigh": 0, "spectral_filter": 0, "normalized_laplacian": 0}
    for name in calls:
        real = getattr(deephash_ext, name)

        def spy(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(deephash_ext, name, spy)

    def refuse(*a, **k):
        raise AssertionError("a torch eigensolver on the HAGCN path")

    monkeypatch.setattr(torch.linalg, "eigh", refuse)
    monkeypatch.setattr(torch.linalg, "eigvalsh", refuse)
    monkeypatch.setattr(fp, "EIG_DENSE_NODES", 0)  # fourier: the block Krylov path, not the whole graph
    m = _fit(x, filter=filt, passes=2, **({"order": 8} if filt == "fourier" else {}))
    # The projection's d x d problem once a pass; fourier's Rayleigh-Ritz steps besides; chebyshev and
    # spline by recurrence, no eigendecomposition of the graph.
    assert calls["eigh"] == 2 if filt != "fourier" else calls["eigh"] > 2
    fit_filters = calls["spectral_filter"]
    assert fit_filters == (2 if filt == "lanczos" else 0)  # lanczos: g(T) on each pass's Krylov matrix
    m.encode(x[:5])
    assert calls["spectral_filter"] == fit_filters + 1 and calls["normalized_laplacian"] == 1  # the subgraphs


@pytest.mark.parametrize("filt", fp.FILTERS[:-1])
def test_the_fit_forms_no_n_by_n_matrix(filt, data, monkeypatch):
    """The training graph is sparse: no dense tensor with two dimensions of n or more is made on the fit's
    way, whatever the filter (the kNN search works in blocks of KNN_BLOCK squared)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    x, _ = data
    n = len(x)
    biggest = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                    biggest.append((sorted(t.shape)[-2] if t.dim() > 1 else 0, tuple(t.shape), str(func)))
            return out

    monkeypatch.setattr(fp, "KNN_BLOCK", 32)
    monkeypatch.setattr(fp, "EIG_DENSE_NODES", 0)
    with Watch():
        m = get_method("hagcn", 16, filter=filt, anchors=0, **({"order": 8} if filt == "fourier" else {}))
        m.fit(x)
    assert len(biggest) > 100 and max(biggest)[0] < n, max(biggest)  # n = 240; F is 240 x 24, the blocks 32 x 32


def _dense_knn(f, k):
    d = fp.sq_dists(f, f).fill_diagonal_(float("inf"))
    v, i = d.topk(k, dim=1, largest=False)
    A = torch.zeros_like(d).scatter_(1, i, torch.exp(-v / v.mean()))
    return torch.maximum(A, A.T)


@pytest.mark.parametrize("filt", ["chebyshev", "spline", "fourier", "gcn", "lanczos"])
def test_sparse_filters_equal_the_dense_filter(filt, monkeypatch):
    """On the sparse graph each filter gives what the eigendecomposition of the dense graph gives (chebyshev
    exactly, spline to its Chebyshev expansion's error, fourier to its eigensolver's tolerance)."""
    x, _ = make_blobs(n_per_class=50, classes=6, dim=20, seed=3, spread=0.8)
    F = fp.unit(torch.as_tensor(x, dtype=torch.float64))
    monkeypatch.setattr(fp, "KNN_BLOCK", 64)  # several blocks, both triangles
    A = fp.knn_graph(F, 7)
    assert A.layout == torch.sparse_csr and A._nnz() <= 2 * 7 * len(F)
    Ad = _dense_knn(F, 7)
    torch.testing.assert_close(A.to_dense(), Ad, rtol=0, atol=1e-12)
    L = graphs.normalized_laplacian(Ad[None])
    basis = "chebyshev" if filt == "lanczos" else filt
    theta = None if filt == "gcn" else fp.heat_theta(basis, 10.0, 8 if filt == "fourier" else 16)
    if filt == "fourier":
        monkeypatch.setattr(fp, "EIG_DENSE_NODES", 0)
        monkeypatch.setattr(fp, "EIG_TOL", 1e-10)
    got = fp.filtered_signal(F, A, filt, theta, seed=0)
    if filt == "gcn":
        want = F - graphs.normalized_laplacian((Ad + torch.eye(len(F), dtype=F.dtype))[None])[0] @ F
    elif filt == "lanczos":
        v0 = torch.rand(1, len(F), generator=torch.Generator().manual_seed(0), dtype=F.dtype)
        V, Tm = graphs.lanczos(L, fp.LANCZOS_STEPS, v0)
        want = (V @ graphs.spectral_filter(V.mT @ F[None], Tm, theta, "chebyshev"))[0]
    else:
        want = graphs.spectral_filter(F[None], L, theta, filt)[0]
    tol = {"spline": 1e-5, "fourier": 1e-6, "lanczos": 1e-6}.get(filt, 1e-10)
    assert (got - want).norm() <= tol * want.norm(), float((got - want).norm() / want.norm())
    # The same from a dense adjacency (converted).
    torch.testing.assert_close(fp.filtered_signal(F, Ad, filt, theta, seed=0), got, rtol=0, atol=1e-9)


def test_chebyshev_fit_recovers_a_polynomial_and_the_heat_kernel():
    theta = fp.heat_theta("chebyshev", 10.0, 16)
    lam = torch.linspace(0, 2, 101, dtype=torch.float64)
    cheb = lambda lam: deephash_ext.reference.chebyshev_basis(lam, 16) @ theta  # noqa: E731
    torch.testing.assert_close(fp.chebyshev_fit(cheb, 16), theta, rtol=0, atol=1e-12)
    spline = lambda lam: deephash_ext.reference.spline_basis(lam, 16) @ fp.heat_theta("spline", 10.0, 16)  # noqa: E731
    approx = deephash_ext.reference.chebyshev_basis(lam, fp.SPLINE_TERMS) @ fp.chebyshev_fit(spline, fp.SPLINE_TERMS)
    assert (approx - spline(lam)).abs().max() < 3e-6


def test_encoding_subgraphs_are_one_batch(data, monkeypatch):
    x, _ = data
    m = _fit(x, anchors=5)
    shapes = []
    real = deephash_ext.normalized_laplacian
    monkeypatch.setattr(deephash_ext, "normalized_laplacian", lambda A: (shapes.append(tuple(A.shape)), real(A))[1])
    m.encode(x[:13])
    assert shapes == [(13, 6, 6)]
    # anchors=0: the projection alone, no subgraph.
    m0 = _fit(x, anchors=0)
    shapes.clear()
    m0.encode(x[:13])
    assert shapes == [] and m0.anchor_z is None


def test_training_items_are_split_into_subgraphs(data, monkeypatch):
    x, _ = data
    shapes = []
    real = fp.knn_graph
    monkeypatch.setattr(fp, "knn_graph", lambda f, k: (shapes.append(tuple(f.shape)), real(f, k))[1])
    m = get_method("hagcn", 16, subgraphs=3, anchors=0, passes=1).fit(x)
    assert shapes == [(80, 24)] * 3 and m.config["subgraphs"] == 3
    assert get_method("hagcn", 16).resolve(fp.MAX_GRAPH_NODES * 2 + 1, 24)["subgraphs"] == 3


def test_ops_and_references_agree(data):
    x, _ = data
    m = _fit(x, filter="spline")
    graphs.set_backend("reference")
    try:
        r = _fit(x, filter="spline")
        zr = r.project(x)
    finally:
        graphs.set_backend("ops")
    z = m.project(x)
    zr = zr * torch.sign((z * zr).sum(0))  # an eigenvector's sign is arbitrary: the two solvers may differ
    torch.testing.assert_close(z, zr, rtol=1e-3, atol=1e-4)


def test_heat_kernels():
    lam = torch.linspace(0, 2, 41, dtype=torch.float64)
    for t in (0.5, 10.0):
        want = torch.exp(-t * lam)
        cheb = deephash_ext.reference.chebyshev_basis(lam, 16) @ fp.heat_theta("chebyshev", t, 16)
        torch.testing.assert_close(cheb, want, atol=1e-5, rtol=0)  # 16 terms: truncation ~4e-6 at t = 10
        spline = deephash_ext.reference.spline_basis(lam, 16) @ fp.heat_theta("spline", t, 16)
        assert (spline - want).abs().max() < (0.02 if t < 1 else 0.1)
    assert torch.equal(fp.heat_theta("fourier", 1.0, 5), torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError):
        fp.heat_theta("gcn", 1.0, 4)


def test_resume_after_a_kill_equals_an_uninterrupted_fit(data, tmp_path):
    x, _ = data
    opts = dict(filter="lanczos", passes=3, seed=7)
    full = get_method("hagcn", 16, **opts).fit(x, checkpoint=Checkpoint(tmp_path / "a" / "checkpoint.pt"))
    with pytest.raises(Killed):
        get_method("hagcn", 16, **opts).fit(x, checkpoint=Checkpoint(tmp_path / "b" / "checkpoint.pt",
                                                                       on_epoch=kill_after(1)))
    resumed = get_method("hagcn", 16, **opts).fit(x, checkpoint=Checkpoint(tmp_path / "b" / "checkpoint.pt",
                                                                             resume=True))
    assert len(full.history) == 3 and resumed.history == full.history
    assert torch.equal(resumed.encode(x), full.encode(x))
    for key in ("W", "R", "anchor_z"):
        assert torch.equal(getattr(resumed, key), getattr(full, key)), key
    for other in (dict(opts, heat=2.0), dict(opts, seed=8)):
        with pytest.raises(ValueError, match="another configuration or seed"):
            get_method("hagcn", 16, **other).fit(x, checkpoint=Checkpoint(tmp_path / "b" / "checkpoint.pt",
                                                                            resume=True))
    with pytest.raises(ValueError, match="another configuration"):  # other bits: another model
        get_method("hagcn", 8, **opts).fit(x, checkpoint=Checkpoint(tmp_path / "b" / "checkpoint.pt", resume=True))


def test_save_load_and_damaged_files(data, tmp_path):
    x, _ = data
    m = _fit(x, filter="fourier", order=12, seed=2)
    m.save(tmp_path / "m.pt")
    for loader in (HAGCN.load, HashMethod.load, load_model):
        back = loader(tmp_path / "m.pt")
        assert type(back) is HAGCN and back.get_options() == m.get_options() and back.config == m.config
        assert torch.equal(back.encode(x), m.encode(x))
    assert m.config["order"] == 12 and m.config["filter"] == "fourier" and m.config["in_dim"] == 24
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    blob["state"]["R"] = torch.zeros(3, 3)
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a usable hagcn model file"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not"):
        METHODS["hagcn-net"].load(tmp_path / "m.pt")


def test_a_network_file_written_as_hagcn_loads_as_hagcn_net(data, tmp_path):
    """Before 0.2 the network was the default ``hagcn``; its files still load, as ``hagcn-net``."""
    x, _ = data
    net = get_method("hagcn-net", 16, epochs=1, hidden=16, batch_size=40, anchors=8).fit(x)
    net.save(tmp_path / "n.pt")
    blob = torch.load(tmp_path / "n.pt", weights_only=True)
    blob["method"] = "hagcn"
    torch.save(blob, tmp_path / "old.pt")
    back = load_model(tmp_path / "old.pt")
    assert back.name == "hagcn-net" and torch.equal(back.encode(x), net.encode(x))


def test_progress_lines_per_pass(data, capsys):
    x, _ = data
    m = get_method("hagcn", 16, passes=2, progress=True).fit(x)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("HAGCN chebyshev 16b: pass 1/2, energy kept ")
    assert all(math.isfinite(h) and 0 < h <= 1 + 1e-9 for h in m.history)


def test_float64_input_and_numpy_input_give_the_same_codes(data):
    x, _ = data
    m = _fit(x)
    assert torch.equal(m.encode(x.double()), m.encode(x)) and torch.equal(m.encode(x.numpy()), m.encode(x))
    assert torch.equal(_fit(np.asarray(x)).encode(x), m.encode(x))


@pytest.mark.parametrize("filt", fp.FILTERS)
def test_degenerate_training_data_gives_codes_not_errors(filt):
    opts = {"order": 8} if filt == "fourier" else {}
    g = torch.Generator().manual_seed(0)
    for x in (torch.ones(50, 20), torch.randn(10, 20, generator=g).repeat(5, 1),
              torch.randn(60, 2, generator=g) @ torch.randn(2, 20, generator=g)):
        m = get_method("hagcn", 16, filter=filt, **opts).fit(x)
        codes = m.encode(x)
        assert torch.isfinite(m.W).all() and set(codes.unique().tolist()) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="non-finite"):
        get_method("hagcn", 16, filter=filt, **opts).fit(torch.full((30, 20), float("nan")))


def test_train_from_the_cli_and_resume(tmp_path, split_npz, capsys):
    """`deephash train` with the default method: a run directory without a loss curve (a fit in passes
    has none), one progress line per pass, and --resume after the fit ends with the same files."""
    import json

    from deephash.cli import main

    args = ["train", "--data", str(split_npz), "--bits", "16", "--anchors", "6"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert [line.split(",")[0] for line in err.splitlines()] == ["HAGCN chebyshev 16b: pass 1/2",
                                                                  "HAGCN chebyshev 16b: pass 2/2"]
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert "loss_history" not in m and 0 <= m["mAP@all"] <= 1
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())["model"]
    assert cfg["method"] == "hagcn" and cfg["anchors"] == 6 and cfg["passes"] == 2 and cfg["order"] == 16
    assert main([*args, "--out", str(tmp_path / "a"), "--resume"]) == 0
    assert capsys.readouterr().err.splitlines() == ["HAGCN chebyshev 16b: resuming after pass 2/2"]
    again = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert again["mAP@all"] == m["mAP@all"] and again["P@r2"] == m["P@r2"]
