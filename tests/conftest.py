import os
import sys

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


# Markers of tests that run only when asked for with -m.
OPT_IN = {
    "slow": "runs on real Fashion-MNIST or wide codes (minutes, GBs); run with -m slow",
    "fuzz_long": "the long profile of tests/test_fuzz.py (minutes); run with -m fuzz_long",
}
# Markers of tests that run by default.
MARKERS = {
    "browser": "renders HTML in headless Chromium (skipped without chromium unless DEEPHASH_REQUIRE_BROWSER=1)",
}


def _cuda_ready():
    import deephash_ext

    return torch.cuda.is_available() and deephash_ext.cuda_compiled()


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """The device an op test runs on: every op test runs on the CPU and, with a GPU and a build with the
    CUDA kernels, on CUDA (skipped otherwise). Inputs are made on the CPU and moved."""
    if request.param == "cuda" and not _cuda_ready():
        pytest.skip("needs a GPU and a build with CUDA kernels")
    return request.param


def pytest_configure(config):
    for name, text in {**OPT_IN, **MARKERS}.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config, items):
    selected = config.getoption("-m") or ""
    for name in OPT_IN:
        if name in selected:
            continue
        skip = pytest.mark.skip(reason=f"{name}: run with -m {name}")
        for item in items:
            if name in item.keywords:
                item.add_marker(skip)


def make_blobs(n_per_class=40, classes=4, dim=16, seed=0, spread=0.35):
    """Tiny clustered embeddings: class centres on a sphere plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) / np.sqrt(dim) * 3 for c in centres])
    y = np.repeat(np.arange(classes), n_per_class)
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture
def blobs():
    return make_blobs()


@pytest.fixture
def blobs_npz(tmp_path, blobs):
    x, y = blobs
    p = tmp_path / "blobs.npz"
    np.savez(p, x=x, y=y)
    return p


@pytest.fixture
def split_npz(tmp_path):
    x, y = make_blobs(n_per_class=50, seed=1)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    q, rest = perm[:20], perm[20:]
    tr = rest[:100]
    p = tmp_path / "split.npz"
    np.savez(p, x_train=x[tr], y_train=y[tr], x_query=x[q], y_query=y[q], x_db=x[rest], y_db=y[rest])
    return p


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPHASH_CACHE", str(tmp_path / "cache"))
    yield
