"""The CUDA emulation (csrc/emu, docs/emulation.md): that its checks bite, and that every kernel of
csrc/cuda runs under it.

The mutation tests copy real kernels out of csrc/cuda (never editing the sources), break each copy in
one way a GPU would not report (a barrier removed where its absence races, a shuffle reading a wrong
lane or one outside its mask, a write one past a shared array, a barrier only some threads reach, a
shared array read before it is written) and show that the emulated run fails, while the unbroken copy
passes under every schedule. They compile with g++ against csrc/emu/cuda_emu.h and the runtime alone
(no torch, a few seconds), so they run without the emulation build. The coverage test needs the build.
"""
import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cuda_kernel_names as kernel_names

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"

_spec = importlib.util.spec_from_file_location("deephash_emu_rewrite", ROOT / "csrc" / "emu" / "rewrite.py")
rewrite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rewrite)


# ------------------------------------------------------------------------------------------------
# The rewrite of .cu into C++ reads every launch and __shared__ declaration of the sources.


def test_kernel_list_is_read_from_the_sources():
    names = kernel_names()
    assert {"pack_bits_kernel", "jacobi_eigh_kernel", "topk_collect_kernel", "split_keys_kernel"} <= names
    assert len(names) >= 25


@pytest.mark.parametrize("path", sorted(CUDA_DIR.glob("*.cu")), ids=lambda p: p.name)
def test_rewrite_reads_every_launch_and_shared_declaration(path):
    src = path.read_text()
    out = rewrite.rewrite(src, str(path))
    assert "<<<" not in out and ">>>" not in out and "__shared__" not in out
    assert out.count("::deephash_emu::launch(") == src.count("<<<")
    # Lines stay where they were, so errors and barrier sites name the .cu file's lines.
    body = out.split("\n", 2)[2]
    assert body.count("\n") == src.count("\n")


def test_rewrite_refuses_what_it_cannot_read():
    with pytest.raises(rewrite.RewriteError):
        rewrite.rewrite("void f() { <<<1, 2>>>(x); }")


# ------------------------------------------------------------------------------------------------
# Mutation tests: copies of real kernels, compiled alone against the emulation header and runtime.


def extract(src: str, name: str) -> str:
    """The definition of function `name` (with its template line) in CUDA source `src`."""
    m = re.search(r"(template\s*<[^;{]*?>\s*)?__(?:global|device)__[^;{}]*?\b" + name + r"\s*\(", src)
    assert m, f"{name} not found"
    start = m.start()
    i = src.index("{", m.end())
    depth = 0
    for j in range(i, len(src)):
        depth += {"{": 1, "}": -1}.get(src[j], 0)
        if depth == 0:
            return src[start:j + 1]
    raise AssertionError(f"unbalanced body of {name}")


def mutate(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the mutation site {old!r} must occur once, found {text.count(old)}"
    return text.replace(old, new)


EIGH = (CUDA_DIR / "eigh_cuda.cu").read_text()
FIRST_INVALID = extract(EIGH, "first_invalid_kernel")
SYMMETRIZE = extract(EIGH, "symmetrize_kernel")
BLOCK_REDUCE = extract(EIGH, "block_reduce")
SUM = re.search(r"template <class T>\nstruct Sum \{.*?\n\};", EIGH, re.S).group(0)
REDUCE_THREADS = re.search(r"constexpr int kReduceThreads = \d+;", EIGH).group(0)

# The copies, each in a namespace of its own: (name, kernel text).
VARIANTS = {
    "first_invalid": FIRST_INVALID,
    # The barrier between the steps of the tree reduction: without it a thread reads a partial minimum
    # that another has not written yet (or has), depending on the order the threads run in.
    "first_invalid_no_barrier": mutate(FIRST_INVALID, """= red[threadIdx.x + s];
    __syncthreads();""", """= red[threadIdx.x + s];
"""),
    # The same barrier reached only by the threads that still reduce.
    "first_invalid_divergent_barrier": mutate(FIRST_INVALID, """= red[threadIdx.x + s];
    __syncthreads();""", """= red[threadIdx.x + s];
    if (threadIdx.x < s) __syncthreads();"""),
    # One figure too many into the 5-double report in device memory.
    "first_invalid_past_report": mutate(FIRST_INVALID, "for (int j = 0; j < 4; ++j) report[1 + j]",
                                        "for (int j = 0; j < 5; ++j) report[1 + j]"),
    # Each thread's candidate never reaches shared memory: the reduction reads what the block started with.
    "first_invalid_unwritten": mutate(FIRST_INVALID, "  red[threadIdx.x] = first;\n", "\n"),
    "symmetrize": SYMMETRIZE,
    # One past the end of a shared array: thread 255 writes red_bad[256].
    "symmetrize_past_end": mutate(SYMMETRIZE, "  red_bad[threadIdx.x] = bad;", "  red_bad[threadIdx.x + 1] = bad;"),
    "reduce": BLOCK_REDUCE,
    # The butterfly reads a wrong lane: lane ^ (s - 1) instead of lane ^ s (lane itself when s = 1).
    "reduce_wrong_lane": mutate(BLOCK_REDUCE, "__shfl_xor_sync(0xffffffffu, v, s)",
                                "__shfl_xor_sync(0xffffffffu, v, s - 1)"),
    # The butterfly names only the lower half-warp in its mask but reads the upper one.
    "reduce_outside_mask": mutate(BLOCK_REDUCE, "__shfl_xor_sync(0xffffffffu, v, s)",
                                  "__shfl_xor_sync(0x0000ffffu, v, s)"),
}

HARNESS_HEAD = """
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include "emu/runtime.h"
static char g_error[4096];
static const char* guard(void (*f)(void*), void* a) {
  g_error[0] = 0;
  try { f(a); } catch (const std::exception& e) { std::snprintf(g_error, sizeof g_error, "%s", e.what()); }
  return g_error;
}
extern "C" void set_schedule(int kind, unsigned long long seed, int poison) {
  deephash_emu::set_schedule(static_cast<deephash_emu::Schedule>(kind), seed);
  deephash_emu::set_poison(static_cast<uint8_t>(poison));
}
"""

# Per variant: the kernel in its namespace, and an entry point that launches it as eigh_cuda.cu does.
HARNESS_FIRST_INVALID = """
namespace NS {
%(REDUCE_THREADS)s
%(KERNEL)s
struct Args { const double* stats; long long Bt; double tol; double* report; };
void launch(void* p) {
  auto* a = static_cast<Args*>(p);
  // The report in device memory of the emu device (a guard page and canary bytes after its 40 bytes).
  struct Report {
    double* p = static_cast<double*>(deephash_emu::device_alloc(5 * sizeof(double)));
    ~Report() { deephash_emu::device_free(p); }
  } report;
  first_invalid_kernel<<<1, kReduceThreads, 0, nullptr>>>(a->stats, a->Bt, a->tol, report.p);
  std::memcpy(a->report, report.p, 5 * sizeof(double));
}
}
extern "C" const char* run_NS(const double* stats, long long Bt, double tol, double* report) {
  NS::Args a{stats, Bt, tol, report};
  return guard(&NS::launch, &a);
}
"""
HARNESS_SYMMETRIZE = """
namespace NS {
%(REDUCE_THREADS)s
%(KERNEL)s
struct Args { const double* L; double* S; double* stats; long long Bt, n; };
void launch(void* p) {
  auto* a = static_cast<Args*>(p);
  symmetrize_kernel<double><<<static_cast<unsigned>(a->Bt), kReduceThreads, 0, nullptr>>>(a->L, a->S, a->stats, a->n);
}
}
extern "C" const char* run_NS(const double* L, double* S, double* stats, long long Bt, long long n) {
  NS::Args a{L, S, stats, Bt, n};
  return guard(&NS::launch, &a);
}
"""
# block_reduce is a device function of the Jacobi kernel: a two-line kernel sums a vector with it.
HARNESS_REDUCE = """
namespace NS {
%(SUM)s
%(KERNEL)s
__global__ void sum_kernel(const double* x, int n, double* out) {
  __shared__ double scratch[32];
  double v = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) v += x[i];
  const double total = block_reduce(v, scratch, Sum<double>());
  if (threadIdx.x == 0) *out = total;
}
struct Args { const double* x; int n; double* out; int threads; };
void launch(void* p) {
  auto* a = static_cast<Args*>(p);
  sum_kernel<<<1, a->threads>>>(a->x, a->n, a->out);
}
}
extern "C" const char* run_NS(const double* x, int n, double* out, int threads) {
  NS::Args a{x, n, out, threads};
  return guard(&NS::launch, &a);
}
"""


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    """All variants compiled into one shared library (with the runtime), loaded with ctypes."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("needs a C++ compiler")
    parts = [HARNESS_HEAD]
    for name, kernel in VARIANTS.items():
        harness = (HARNESS_FIRST_INVALID if name.startswith("first_invalid") else
                   HARNESS_SYMMETRIZE if name.startswith("symmetrize") else HARNESS_REDUCE)
        parts.append((harness % dict(KERNEL=kernel, REDUCE_THREADS=REDUCE_THREADS, SUM=SUM)).replace("NS", name))
    tmp = tmp_path_factory.mktemp("emu_mutants")
    cu = tmp / "mutants.cu"
    cu.write_text("".join(parts))
    cpp = tmp / "mutants.cpp"
    cpp.write_text(rewrite.rewrite(cu.read_text(), str(cu)))
    so = tmp / "mutants.so"
    cmd = [cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-w", f"-I{ROOT / 'csrc'}", str(cpp),
           str(ROOT / "csrc" / "emu" / "runtime.cpp"), "-o", str(so)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lib = ctypes.CDLL(str(so))
    for name in VARIANTS:
        getattr(lib, f"run_{name}").restype = ctypes.c_char_p
    return lib


SCHEDULES = [(0, 0, 0xFF), (1, 0, 0x00), (2, 1, 0xA5), (2, 2, 0x5A)]  # forward, reverse, two shuffles
P = ctypes.c_void_p


def ptr(a: np.ndarray):
    return a.ctypes.data_as(P)


def run_first_invalid(lib, name, stats, tol=1e-9):
    report = np.zeros(5)
    err = getattr(lib, f"run_{name}")(ptr(stats), ctypes.c_longlong(len(stats)), ctypes.c_double(tol), ptr(report))
    return report, err.decode()


def invalid_stats(Bt=300, bad=(37, 200)):
    """Per-graph figures [Bt, 4] where graphs `bad` fail the symmetry check."""
    st = np.zeros((Bt, 4))
    st[:, 1] = 1.0
    st[:, 2] = -1.0
    for b in bad:
        st[b, 0] = 1.0
    return np.ascontiguousarray(st)


def results_under_schedules(lib, run):
    out = []
    for kind, seed, poison in SCHEDULES:
        lib.set_schedule(kind, ctypes.c_ulonglong(seed), poison)
        out.append(run())
    lib.set_schedule(0, ctypes.c_ulonglong(0), 0xFF)
    return out


def test_first_invalid_kernel_as_written_passes_every_schedule(mutants):
    runs = results_under_schedules(mutants, lambda: run_first_invalid(mutants, "first_invalid", invalid_stats()))
    for report, err in runs:
        assert err == ""
        assert report[0] == 37 and report[1] == 1.0


def test_removed_barrier_races(mutants):
    runs = results_under_schedules(mutants,
                                   lambda: run_first_invalid(mutants, "first_invalid_no_barrier", invalid_stats()))
    assert all(err == "" for _, err in runs)  # no check fires: the race shows as results that differ
    firsts = [r[0] for r, _ in runs]
    assert len(set(firsts)) > 1, f"the schedules agree on {firsts}: the race went unseen"


def test_barrier_reached_by_some_threads_is_an_error(mutants):
    _, err = run_first_invalid(mutants, "first_invalid_divergent_barrier", invalid_stats())
    assert "first_invalid_kernel" in err and "__syncthreads at" in err and "is reached by" in err
    assert "eigh_cuda.cu" not in err  # the copy's own file and line
    assert re.search(r"mutants\.cu:\d+", err)


def test_write_past_the_end_of_device_memory_is_an_error(mutants):
    _, err = run_first_invalid(mutants, "first_invalid_past_report", invalid_stats())
    assert "first_invalid_kernel wrote past the end of an emu allocation (40 bytes)" in err


def test_shared_memory_read_before_write_shows_through_the_poison(mutants):
    runs = results_under_schedules(mutants,
                                   lambda: run_first_invalid(mutants, "first_invalid_unwritten", invalid_stats()))
    firsts = [r[0] for r, _ in runs]
    assert len(set(firsts)) > 1 or firsts[0] != 37, f"poisoned shared memory went unseen: {firsts}"


def run_symmetrize(lib, name, L):
    Bt, n = L.shape[0], L.shape[1]
    S, stats = np.zeros_like(L), np.zeros((Bt, 4))
    err = getattr(lib, f"run_{name}")(ptr(L), ptr(S), ptr(stats), ctypes.c_longlong(Bt), ctypes.c_longlong(n))
    return S, stats, err.decode()


def test_symmetrize_kernel_as_written(mutants):
    rng = np.random.default_rng(0)
    L = np.ascontiguousarray(rng.normal(size=(3, 20, 20)))
    L[1] = (L[1] + L[1].T) / 2
    for S, stats, err in results_under_schedules(mutants, lambda: run_symmetrize(mutants, "symmetrize", L)):
        assert err == ""
        np.testing.assert_allclose(S, (L + L.transpose(0, 2, 1)) / 2, rtol=1e-15)
        assert stats[1, 0] == 0.0 and stats[0, 0] > 0 and (stats[:, 2] == -1).all()


def test_write_one_past_a_shared_array_is_an_error(mutants):
    L = np.ascontiguousarray(np.eye(20)[None].repeat(2, 0))
    _, _, err = run_symmetrize(mutants, "symmetrize_past_end", L)
    assert "symmetrize_kernel" in err and "thread (255, 0, 0)" in err
    assert "0 bytes past the end of the shared array 'red_bad' (2048 bytes)" in err


def run_reduce(lib, name, x, threads=256):
    out = np.zeros(1)
    err = getattr(lib, f"run_{name}")(ptr(x), ctypes.c_int(len(x)), ptr(out), ctypes.c_int(threads))
    return out[0], err.decode()


def test_block_reduce_as_written(mutants):
    x = np.arange(1000, dtype=np.float64)
    for threads in (64, 256, 1024):
        for total, err in results_under_schedules(mutants, lambda: run_reduce(mutants, "reduce", x, threads)):
            assert err == "" and total == x.sum()


def test_shuffle_reading_a_wrong_lane_gives_a_wrong_sum(mutants):
    x = np.arange(1000, dtype=np.float64)
    total, err = run_reduce(mutants, "reduce_wrong_lane", x)
    assert err == "" and total != x.sum()


def test_shuffle_reading_outside_its_mask_is_an_error(mutants):
    _, err = run_reduce(mutants, "reduce_outside_mask", np.ones(100))
    assert "__shfl*_sync" in err and "mask 0xffff" in err
    assert "reads lane 16, outside the mask" in err or "excludes the calling lane" in err


# ------------------------------------------------------------------------------------------------
# Every kernel of csrc/cuda runs under the emulation (needs the emulation build).


@pytest.fixture(scope="module")
def emu():
    from conftest import emu_module

    mod = emu_module()
    if mod is None:
        pytest.skip("needs the CUDA emulation build (DEEPHASH_EMU=1, docs/emulation.md)")
    return mod


def drive_every_op(emu):
    """Op calls on the emu device that between them reach every kernel: every code width path, both
    paths of hamming_topk, both ties of topk_map with class ids and multi-hot labels, the three
    regimes of eigh, spectral_filter's forward and backward in every basis."""
    import deephash_ext as de

    g = torch.Generator().manual_seed(0)
    dev = "emu"
    x = torch.randn(5, 70, generator=g)
    de.unpack_bits(de.pack_bits(x.to(dev)), 70)
    for bits in (64, 72):
        q = de.pack_bits(torch.randn(9, bits, generator=g)).to(dev)
        db = de.pack_bits(torch.randn(300, bits, generator=g)).to(dev)
        de.hamming_distance(q, db)
        de.hamming_range(q, db, bits // 2)
        de.hamming_topk(q, db, 5)
        # Massive ties send queries to the exact path.
        de.hamming_topk(q, db[:1].expand(300, -1).contiguous(), 7)
        ql, dl = torch.randint(0, 3, (9,), generator=g), torch.randint(0, 3, (300,), generator=g)
        for ties in ("index", "average"):
            de.topk_map(q, db, ql.to(dev), dl.to(dev), 0, ties)
        de.topk_map(q, db, torch.rand(9, 4, generator=g).gt(0.5).to(dev), torch.rand(300, 4, generator=g).gt(0.5).to(dev),
                    50, "index")
    A = torch.rand(2, 12, 12, generator=g, dtype=torch.float64)
    A = (A + A.mT).requires_grad_()
    L = de.normalized_laplacian(A.to(dev))
    L.sum().backward()
    de.eigh(L.detach())
    # A device with less shared memory per block moves eigh's Vt to a global workspace (n = 40 float64
    # needs 26,720 bytes with Vt shared, 13,920 without), then hands it to cuSOLVER's place (the CPU op).
    A40 = torch.rand(1, 40, 40, generator=g, dtype=torch.float64)
    L40 = de.normalized_laplacian((A40 + A40.mT).to(dev))
    for optin in (20_000, 12_000):
        with emu.device_smem_optin(optin):
            de.eigh(L40)
    for basis, K in (("chebyshev", 4), ("spline", 5), ("fourier", 3)):
        xs = torch.randn(2, 12, 3, generator=g, dtype=torch.float64, device="cpu").to(dev).requires_grad_()
        theta = torch.randn(K, generator=g, dtype=torch.float64).to(dev).requires_grad_()
        de.spectral_filter(xs, L.detach().requires_grad_(), theta, basis).sum().backward()


def test_every_kernel_runs_under_the_emulation(emu):
    before = emu.launched_kernels()
    with emu.ScheduleCheck():
        drive_every_op(emu)
    after = emu.launched_kernels()
    ran = {name for name, stats in after.items() if stats[0] > before.get(name, (0,))[0] and stats[2] > 0}
    missing = sorted(kernel_names() - ran)
    assert not missing, f"kernels of csrc/cuda that never ran under the emulation: {missing}"


def test_schedule_reruns_catch_a_result_that_depends_on_the_schedule(emu):
    def order_dependent():  # stands for a racy op: its result follows the schedule
        return torch.tensor(["forward", "reverse", "shuffle"].index(emu._emu.get_schedule()[0]))

    with pytest.raises(emu.ScheduleMismatch, match="differs from the one under forward"):
        emu.check_schedules(order_dependent)
    assert emu.check_schedules(lambda: torch.arange(3)).tolist() == [0, 1, 2]


def test_launch_limits_are_checked_through_the_ops(emu):
    """A device with less shared memory than a kernel's static arrays: the launch fails as on a GPU,
    naming the kernel, instead of running."""
    import deephash_ext as de

    L = torch.eye(4, dtype=torch.float64)[None].to("emu")
    with emu.device_smem_optin(1024), pytest.raises(RuntimeError, match="symmetrize_kernel.*exceed the device's 1024"):
        de.eigh(L)
    w, _ = de.eigh(L)
    assert torch.equal(w.cpu(), torch.ones(1, 4, dtype=torch.float64))
