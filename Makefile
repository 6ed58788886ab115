# Everything from a fresh Debian/Ubuntu machine with Python 3.10+: `make demo` (the main job) and
# `make test` (the test suite) create the virtual environment, install torch and the build
# requirements, then deephash itself with its dependencies, compiling the extension in place.
# pyproject.toml is the one list of dependencies; this file pins only torch.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch by default; e.g. `make test TORCH=torch==2.14.1` for a CUDA build.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
MAX_JOBS ?= 2
SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h')
# Requirements of pyproject.toml sections (build, runtime, an extra), torch left to $(TORCH).
REQUIREMENTS := $(PY) .ci/requirements.py --without torch
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: all install test test-emu demo bench data clean gpu-check

all: install

# The extension compiles against the torch of this environment (--no-build-isolation below), so
# torch and the rest of [build-system] requires go in first.
$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	reqs=$$($(REQUIREMENTS) build) && $(PY) -m pip install -q "$(TORCH)" $$reqs
	touch $@

# pip's editable install compiles deephash_ext._C next to its sources and installs the runtime
# and test dependencies from pyproject.toml, so a dependency missing there fails here.
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	MAX_JOBS=$(MAX_JOBS) $(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

install: $(VENV)/.built

# Fashion-MNIST from Debian's package (the loader also downloads it into a cache if apt cannot).
data:
	@test -d $(FMNIST) || { command -v apt-get >/dev/null && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q dataset-fashion-mnist; } || \
	  echo "dataset-fashion-mnist not installed; deephash will try to download Fashion-MNIST"

test: install
	$(PY) -m pytest -q tests

# The CUDA kernels under the CPU emulation (docs/emulation.md): builds deephash_ext._emu next to _C,
# then runs every op test on the "emu" device and the emulation's own tests.
$(VENV)/.built-emu: $(VENV)/.built $(SOURCES) $(shell find csrc/emu -type f)
	DEEPHASH_EMU=only MAX_JOBS=$(MAX_JOBS) $(PY) setup.py -q build_ext --inplace
	touch $@

test-emu: $(VENV)/.built-emu
	DEEPHASH_REQUIRE_EMU=1 $(PY) -m pytest -q tests -k emu

demo: install data
	$(VENV)/bin/deephash demo

bench: install
	reqs=$$($(REQUIREMENTS) bench) && $(PY) -m pip install -q $$reqs
	$(PY) benchmarks/bench_retrieval.py

# On a GPU machine: build for sm_90, quick checks, racecheck, CUDA tests, GPU benchmarks into $(OUT).
# `make gpu-check DRY=1` rehearses it without a GPU (FORCE_CUDA=1 build, the steps on the CPU ops).
OUT ?= gpu-check-out
gpu-check:
	bash benchmarks/gpu_check.sh $(OUT) $(if $(DRY),--dry-run)

clean:
	rm -rf build deephash_ext/*.so *.egg-info
