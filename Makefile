# Everything from a fresh Debian/Ubuntu machine with Python 3.10+: `make demo` (the main job) and
# `make test` (the test suite) create the virtual environment, install torch and the build
# requirements, and compile the extension in place.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch by default; e.g. `make test TORCH=torch==2.14.1` for a CUDA build.
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
MAX_JOBS ?= 2
SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h')
PACKAGES := numpy ninja pybind11 setuptools wheel pytest scipy tqdm matplotlib
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: all install test demo bench data clean gpu-check

all: install

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)" $(PACKAGES)
	touch $@

# pip's editable install compiles deephash_ext._C next to its sources.
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	MAX_JOBS=$(MAX_JOBS) $(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.built

# Fashion-MNIST from Debian's package (the loader also downloads it into a cache if apt cannot).
data:
	@test -d $(FMNIST) || { command -v apt-get >/dev/null && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q dataset-fashion-mnist; } || \
	  echo "dataset-fashion-mnist not installed; deephash will try to download Fashion-MNIST"

test: install
	$(PY) -m pytest -q tests

demo: install data
	$(VENV)/bin/deephash demo

bench: install
	$(PY) -m pip install -q faiss-cpu
	$(PY) benchmarks/bench_retrieval.py

# On a GPU machine: build for sm_90, quick checks, racecheck, CUDA tests, GPU benchmarks into $(OUT).
# `make gpu-check DRY=1` rehearses it without a GPU (FORCE_CUDA=1 build, the steps on the CPU ops).
OUT ?= gpu-check-out
gpu-check:
	bash benchmarks/gpu_check.sh $(OUT) $(if $(DRY),--dry-run)

clean:
	rm -rf build deephash_ext/*.so *.egg-info
