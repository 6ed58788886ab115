import os
import sys

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

# The emu device (when built) registers before any test runs: autograd's engine sizes its device
# queues at the first backward, from the devices registered then.
import deephash_ext.emu  # noqa: E402


# Markers of tests that run only when asked for with -m.
OPT_IN = {
    "slow": "runs on real Fashion-MNIST or wide codes (minutes, GBs); run with -m slow",
    "fuzz_long": "the long profile of tests/test_fuzz.py (minutes); run with -m fuzz_long",
}
# Markers of tests that run by default.
MARKERS = {
    "browser": "renders HTML in headless Chromium (skipped without chromium unless DEEPHASH_REQUIRE_BROWSER=1)",
    "no_schedule_check": "on the emu device, run each op once instead of under every schedule (torch.compile tests)",
}


def _cuda_ready():
    import deephash_ext

    return torch.cuda.is_available() and deephash_ext.cuda_compiled()


def emu_module():
    """deephash_ext.emu when the emulation build is present (DEEPHASH_EMU=1), else None; with
    DEEPHASH_REQUIRE_EMU=1 (CI) a missing build is an error instead of a skip."""
    import deephash_ext.emu as emu

    if not emu.available and os.environ.get("DEEPHASH_REQUIRE_EMU") == "1":
        raise RuntimeError("DEEPHASH_REQUIRE_EMU=1 but deephash_ext._emu is not built (DEEPHASH_EMU=1 make install)")
    return emu if emu.available else None


@pytest.fixture(params=["cpu", "cuda", "emu"])
def device(request):
    """The device an op test runs on: every op test runs on the CPU; with a GPU and a build with the
    CUDA kernels, on CUDA; with the emulation build, on "emu": the CUDA kernels as written, on the CPU,
    each deephash_ext op call rerun under several thread schedules that must agree to the bit
    (deephash_ext/emu.py). Skipped where absent. Inputs are made on the CPU and moved."""
    if request.param == "cuda" and not _cuda_ready():
        pytest.skip("needs a GPU and a build with CUDA kernels")
    if request.param == "emu":
        emu = emu_module()
        if emu is None:
            pytest.skip("needs the CUDA emulation build (DEEPHASH_EMU=1, docs/emulation.md)")
        if request.node.get_closest_marker("no_schedule_check"):
            yield request.param
            return
        with emu.ScheduleCheck():
            yield request.param
        return
    yield request.param


def cuda_kernel_names():
    """Every __global__ function defined in csrc/cuda and csrc/common, read from the sources."""
    import re
    from pathlib import Path

    csrc = Path(__file__).resolve().parents[1] / "csrc"
    names = set()
    for path in sorted(csrc.glob("cuda/*.cu")) + sorted(csrc.glob("common/*.cuh")):
        for m in re.finditer(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(", path.read_text()):
            names.add(m.group(1))
    return names


def pytest_terminal_summary(terminalreporter):
    """With the emulation build: which CUDA kernels this session ran on the emu device."""
    emu = deephash_ext.emu
    if not emu.available or not emu.launched_kernels():
        return
    ran, names = emu.launched_kernels(), cuda_kernel_names()
    never = sorted(names - set(ran))
    launches = sum(v[0] for v in ran.values())
    terminalreporter.write_line(f"emu: {len(names) - len(never)} of {len(names)} CUDA kernels ran ({launches} launches)"
                                + (f"; never: {', '.join(never)}" if never else ""))


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


class Killed(Exception):
    """A simulated kill, raised from a checkpoint's on_epoch hook (resume tests)."""


def kill_after(epoch_to_kill):
    """An on_epoch hook that raises Killed once epoch ``epoch_to_kill`` is saved."""
    def on_epoch(epoch):
        if epoch == epoch_to_kill:
            raise Killed
    return on_epoch


def image_folder(root, per_class, size, classes=("cat", "dog"), seed=0):
    """root/<class>/<i>.png of random RGB pictures, as `deephash embed --images` reads them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


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
