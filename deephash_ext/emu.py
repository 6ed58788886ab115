"""The "emu" device: the CUDA kernels of csrc/cuda run on the CPU under an emulation of the CUDA
execution model (csrc/emu, docs/emulation.md).

Built only on request (``DEEPHASH_EMU=1``, see setup.py); importing this module loads
``deephash_ext._emu`` when it was built, which names torch's PrivateUse1 device "emu" and registers the
emulated kernels for it. Then ``x.to("emu")`` works as ``x.to("cuda")`` would, and every
``torch.ops.deephash_ext.*`` call on emu tensors runs the .cu host code and kernels as written.

``available`` says whether the build is there. ``schedules()`` / ``check_schedules()`` rerun an op with
the threads of every block in other orders (and shared memory poisoned with other bytes) and demand the
same bits: a difference is a race or a read of uninitialised shared memory.
"""
from __future__ import annotations

import contextlib
import os
import types

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import deephash_ext  # noqa: F401  (the op schemas, fake kernels and autograd)

try:
    from . import _emu
except ImportError:  # not built: setup.py builds it with DEEPHASH_EMU=1
    _emu = None

available = _emu is not None
DEVICE = "emu"

def _device_module():
    """torch.emu: what torch asks of a PrivateUse1 backend's module (one device, no random state of its own:
    random ops run on the CPU through the fallback)."""
    mod = types.ModuleType("torch.emu")
    mod.is_available = lambda: True
    mod.device_count = lambda: 1
    mod.current_device = lambda: 0
    mod.is_initialized = lambda: True
    mod._is_in_bad_fork = lambda: False
    mod.manual_seed = mod.manual_seed_all = lambda seed: None
    mod.synchronize = lambda device=None: None
    mod.get_rng_state = lambda device=None: torch.get_rng_state()
    mod.set_rng_state = lambda state, device=None: torch.set_rng_state(state)
    return mod


if available:
    if torch._C._get_privateuse1_backend_name() != DEVICE:
        torch.utils.rename_privateuse1_backend(DEVICE)
    if not hasattr(torch, DEVICE):
        torch._register_device_module(DEVICE, _device_module())


# (schedule, seed, poison byte) of each run of an op under check_schedules: in order, reversed and a
# seeded shuffle, with shared memory starting as all-ones (NaN, -1), zeros and 0xA5. Three runs keep the
# emulated suite within CI's time; DEEPHASH_EMU_SCHEDULES="forward:0:ff,...,shuffle:7:5a" asks for more.
DEFAULT_SCHEDULES = (("forward", 0, 0xFF), ("reverse", 0, 0x00), ("shuffle", 1, 0xA5))


def _require():
    if not available:
        raise RuntimeError("deephash_ext._emu is not built: rebuild with DEEPHASH_EMU=1 (see docs/emulation.md)")


def launched_kernels() -> dict[str, tuple[int, int, int, int]]:
    """{kernel: (launches, blocks, threads, barriers)} since the last reset_launched_kernels()."""
    _require()
    return dict(_emu.launched_kernels())


def reset_launched_kernels() -> None:
    _require()
    _emu.reset_launched_kernels()


@contextlib.contextmanager
def schedule(kind: str, seed: int = 0, poison: int | None = None):
    """Runs the body's kernels with a block's threads in order `kind` ("forward", "reverse", "shuffle"
    with `seed`) and shared memory filled with byte `poison` at the start of each block."""
    _require()
    before, before_poison = _emu.get_schedule(), _emu.get_poison()
    _emu.set_schedule(kind, seed)
    if poison is not None:
        _emu.set_poison(poison)
    try:
        yield
    finally:
        _emu.set_schedule(*before)
        _emu.set_poison(before_poison)


@contextlib.contextmanager
def device_smem_optin(nbytes: int):
    """The emulated device's opt-in shared memory per block (default 232448, as sm_90): lower it to
    reach the code paths of smaller GPUs (eigh's global-memory and cuSOLVER regimes)."""
    _require()
    before = _emu.get_device_smem_optin()
    _emu.set_device_smem_optin(nbytes)
    try:
        yield
    finally:
        _emu.set_device_smem_optin(before)


class ScheduleMismatch(AssertionError):
    """An op's result changed with the order of threads between barriers or with the poison byte."""


def _bits(t: torch.Tensor):
    t = t.detach().cpu()
    return t.shape, t.stride(), t.dtype, t.contiguous().view(-1).view(torch.uint8) if t.numel() else t


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        (sa, ta, da, va), (sb, tb, db, vb) = _bits(a), _bits(b)
        return sa == sb and ta == tb and da == db and torch.equal(va, vb)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_schedules(fn, *args, schedules=DEFAULT_SCHEDULES, name=None, **kwargs):
    """fn(*args, **kwargs) under every schedule of `schedules`; raises ScheduleMismatch unless every run
    gives the same bits (values, shapes, strides), else returns the first run's result."""
    first = None
    for i, (kind, seed, poison) in enumerate(schedules):
        with schedule(kind, seed, poison):
            out = fn(*args, **kwargs)
        if i == 0:
            first = out
        elif not _same(first, out):
            k0, s0, p0 = schedules[0]
            raise ScheduleMismatch(
                f"{name or getattr(fn, '__name__', fn)}: the result under schedule {kind} (seed {seed}, poison "
                f"0x{poison:02X}) differs from the one under {k0} (seed {s0}, poison 0x{p0:02X}): a race between "
                f"threads or a read of shared memory before it was written")
    return first


def _on_emu(x) -> bool:
    return type(x) is torch.Tensor and x.device.type == DEVICE


class ScheduleCheck(TorchDispatchMode):
    """While active, every deephash_ext op called on emu tensors runs under each schedule of
    check_schedules and must give the same bits each time (tests/conftest.py turns it on for the emu
    device). Other ops, and calls on tensor subclasses (fake tensors), pass through."""

    def __init__(self, schedules=None):
        super().__init__()
        spec = os.environ.get("DEEPHASH_EMU_SCHEDULES")
        self.schedules = schedules or (_parse(spec) if spec else DEFAULT_SCHEDULES)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = list(args) + list(kwargs.values())
        if func.namespace != "deephash_ext" or not any(_on_emu(a) for a in flat) or any(
                isinstance(a, torch.Tensor) and type(a) is not torch.Tensor for a in flat):
            return func(*args, **kwargs)
        return check_schedules(func, *args, schedules=self.schedules, name=str(func), **kwargs)


def _parse(spec: str):
    """"forward:0:ff,reverse:0:00" -> schedules."""
    out = []
    for item in spec.split(","):
        kind, seed, poison = (item.split(":") + ["0", "ff"])[:3]
        out.append((kind, int(seed), int(poison, 16)))
    return tuple(out)
