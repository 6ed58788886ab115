"""Builds deephash_ext._C: the C++ kernels always, the CUDA kernels when a GPU is visible or FORCE_CUDA=1.

Environment knobs:
  FORCE_CUDA=1           compile csrc/cuda/*.cu even without a visible GPU (CI does, so CUDA code cannot rot)
  DEEPHASH_EMU=1         also build deephash_ext._emu: the CUDA kernels compiled as C++ under the CPU
                         emulation of csrc/emu, for the "emu" device of the tests (docs/emulation.md);
                         DEEPHASH_EMU=only builds _emu alone (beside an installed _C: `make test-emu`)
  DEEPHASH_CPU_ARCH=...  value for -march (default "native": the extension is built in place, on the
                         machine that runs it; set e.g. x86-64-v3 to build for other machines)
  MAX_JOBS=N             parallel compile jobs (torch's BuildExtension reads it)
"""
import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _use_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def _extension():
    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    cuda_sources = rel("csrc/cuda/*.cu")
    march = os.environ.get("DEEPHASH_CPU_ARCH", "native")
    # -fopenmp: at::parallel_for is a header template whose OpenMP pragmas compile into this library;
    # without the flag every CPU kernel silently runs on one thread. The runtime resolves to the
    # libgomp.so.1 that torch has already loaded, so torch.set_num_threads governs our kernels too.
    cxx = ["-O3", "-g0", "-std=c++20", f"-march={march}", "-fvisibility=hidden", "-fopenmp"]
    link = ["-fopenmp"]
    macros = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    if _use_cuda() and cuda_sources:
        macros.append(("DEEPHASH_WITH_CUDA", None))
        nvcc = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension(
            "deephash_ext._C",
            sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=macros,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link,
        )
    return CppExtension(
        "deephash_ext._C",
        sources,
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
    )


def _emu_extension():
    """deephash_ext._emu: csrc/cuda/*.cu rewritten to C++ (csrc/emu/rewrite.py) into build/emu-src, the
    emulated runtime and the emu device; spectral_filter's host code again, for the emu device."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("deephash_emu_rewrite", os.path.join(ROOT, "csrc/emu/rewrite.py"))
    rewrite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rewrite)
    out_dir = os.path.join(ROOT, "build", "emu-src")
    os.makedirs(out_dir, exist_ok=True)
    generated = []
    for cu in sorted(glob.glob(os.path.join(ROOT, "csrc/cuda/*.cu"))):
        rel = os.path.relpath(cu, ROOT)
        with open(cu) as f:
            text = rewrite.rewrite(f.read(), rel)
        target = os.path.join(out_dir, os.path.basename(cu)[:-3] + ".cpp")
        # Rewrite only on change, so that ninja recompiles only what changed.
        if not os.path.exists(target) or open(target).read() != text:
            with open(target, "w") as f:
                f.write(text)
        generated.append(os.path.relpath(target, ROOT))
    sources = generated + ["csrc/emu/runtime.cpp", "csrc/emu/device.cpp", "csrc/emu/module.cpp",
                           "csrc/spectral_filter.cpp"]
    # The shim directory goes first: its c10/cuda headers replace torch's for the rewritten sources.
    include_dirs = [os.path.join(ROOT, "csrc/emu/shim"), os.path.join(ROOT, "csrc")]
    march = os.environ.get("DEEPHASH_CPU_ARCH", "native")
    cxx = ["-O2", "-g0", "-std=c++20", f"-march={march}", "-fvisibility=hidden", "-Wno-unknown-pragmas"]
    return CppExtension("deephash_ext._emu", sources, include_dirs=include_dirs,
                        define_macros=[("DEEPHASH_EMU", None)],
                        extra_compile_args={"cxx": cxx})


def _extensions():
    emu = os.environ.get("DEEPHASH_EMU", "0")
    if emu == "only":
        return [_emu_extension()]
    return [_extension()] + ([_emu_extension()] if emu == "1" else [])


if "TORCH_CUDA_ARCH_LIST" not in os.environ and _use_cuda():
    # Ampere and Hopper by default; PTX for newer parts.
    os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"

setup(
    packages=["deephash_ext"] + find_packages("python"),
    package_dir={"": "python", "deephash_ext": "deephash_ext"},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
