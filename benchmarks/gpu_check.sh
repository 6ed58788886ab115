#!/usr/bin/env bash
# One run on a bare GPU machine: build the CUDA kernels for sm_90, the quick checks of the failures a
# reading of the kernels found (first, so that they show in the first minutes), compute-sanitizer's
# racecheck on tiny cases where the toolkit has it, the CUDA tests, then the GPU benchmarks. Every step
# is time-bounded, a failed step does not stop the next, and everything lands in OUTDIR:
#   summary.md  steps, status, seconds, then the benchmark tables   build.log  quick.log
#   sanitizer.log  tests.log  bench.log                               (6 files)
#
#   benchmarks/gpu_check.sh OUTDIR            on the GPU machine (make gpu-check OUT=OUTDIR)
#   benchmarks/gpu_check.sh OUTDIR --dry-run  here, without a GPU: the build with FORCE_CUDA=1 and
#                                             every Python step on device=cpu at tiny sizes
#
# Python and torch: $PYTHON if set; else, on the GPU machine, the first python3 whose torch sees a GPU
# (the machine's image has one; a torch 2.14.1 wheel found in $WHEELS, default .whl/, is installed
# over it first with pip --no-index, since nothing can be downloaded there); in a dry run
# /work/venv-cuda/bin/python (torch 2.14.1, CUDA build) when present, else python3.
# Budget (GPU), limits in brackets: build ~2 min on 16 cores [5], quick checks < 1 min [2], racecheck
# ~1 min [2], tests ~1 min [2] and CUDA tests ~1 min [2], benchmarks ~3 min [3.3, 40 s per suite]:
# ~8 min when the steps pass. A step past its limit is killed and the next one runs.
set -uo pipefail

usage() { echo "usage: $0 OUTDIR [--dry-run]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
OUTDIR=$1
DRY=0
if [[ $# -eq 2 ]]; then [[ $2 == --dry-run ]] || usage; DRY=1; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$ROOT"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONPATH="$ROOT:$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY=$OUTDIR/summary.md
T0=$(date +%s)

if [[ $DRY == 1 ]]; then
  DEVICE=cpu SIZE=tiny LOOPS=2 BUILD_LIMIT=3000
  PY=${PYTHON:-$( [[ -x /work/venv-cuda/bin/python ]] && echo /work/venv-cuda/bin/python || echo python3)}
  BUILD_JOBS=${MAX_JOBS:-1}
  # The library goes where the CI's CUDA compile puts it; the steps load it from a staged package.
  BUILD_ARGS=(--build-temp build/cuda-temp --build-lib build/cuda-lib)
else
  DEVICE=cuda SIZE=full LOOPS=50 BUILD_LIMIT=300
  BUILD_JOBS=${MAX_JOBS:-$(nproc)}
  BUILD_ARGS=(--inplace)
  if [[ -n ${PYTHON:-} ]]; then
    PY=$PYTHON
  else
    PY=""
    for cand in python3 /opt/torch/.venv/bin/python3 python; do
      if command -v "$cand" >/dev/null && "$cand" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        PY=$(command -v "$cand"); break
      fi
    done
    [[ -n $PY ]] || { echo "no python3 with a torch that sees a GPU" | tee "$SUMMARY"; exit 1; }
  fi
  WHEELS=${WHEELS:-$ROOT/.whl}
  if compgen -G "$WHEELS/torch-2.14.1*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl &&
      export PYTHONPATH="/tmp/site:$PYTHONPATH"
  fi
fi
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export PATH="$CUDA_HOME/bin:$PATH"

{
  echo "# GPU check ($([[ $DRY == 1 ]] && echo 'dry run: device=cpu, tiny sizes' || echo 'GPU run'))"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $(hostname), commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"
  echo "- python: $PY, $("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1)"
  echo "- nvcc: $(nvcc --version 2>/dev/null | tail -1 || echo none); GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
  echo
  echo "| step | status | seconds | log |"
  echo "| --- | --- | --- | --- |"
} >"$SUMMARY"

FAILED=0
# step NAME SECONDS LOG COMMAND...: runs COMMAND under a time limit, appends its output to LOG and a
# row to the summary. Returns the command's status (124: timed out).
step() {
  local name=$1 limit=$2 log=$3; shift 3
  local t=$(date +%s) rc
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUTDIR/$log"
  timeout -k 15 "$limit" "$@" >>"$OUTDIR/$log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t )) status=ok
  [[ $rc == 0 ]] || { status="FAILED (exit $rc$([[ $rc == 124 ]] && echo ', timed out'))"; FAILED=$((FAILED + 1)); }
  echo "| $name | $status | $dt | $log |" >>"$SUMMARY"
  echo "   -> $status in ${dt}s"
  [[ $rc == 0 ]] || tail -n 25 "$OUTDIR/$log"
  return $rc
}

# 1. Build. A failed build ends the run: nothing after it could load the kernels.
step build "$BUILD_LIMIT" build.log env MAX_JOBS="$BUILD_JOBS" "$PY" setup.py -q build_ext "${BUILD_ARGS[@]}" || {
  echo; echo "build failed: see build.log"; } >>"$SUMMARY"
if [[ $DRY == 1 ]]; then
  # The Python steps run in a staged copy of the repository whose deephash_ext holds the CUDA build
  # (an in-place CPU build in this checkout must stay as it is). First, as CI does: the library
  # loads without a GPU and every op has a CUDA kernel.
  STAGE=$(mktemp -d)
  cp -r deephash_ext benchmarks tests python pyproject.toml "$STAGE"/ &&
    rm -f "$STAGE"/deephash_ext/_C*.so && cp build/cuda-lib/deephash_ext/_C*.so "$STAGE"/deephash_ext/ || exit 1
  trap 'rm -rf "$STAGE"' EXIT
  cd "$STAGE"
  export PYTHONPATH="$STAGE:$STAGE/python"
  step cuda-kernels 120 build.log "$PY" - <<'PY'
import torch, deephash_ext  # noqa: F401
ops = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("deephash_ext::"))
has = torch._C._dispatch_has_kernel_for_dispatch_key
cpu_only = {"deephash_ext::mih_build", "deephash_ext::mih_search"}  # multi-index hashing: CPU by design
missing = [n for n in ops if not (has(n, "CUDA") or has(n, "CompositeImplicitAutograd")) and n not in cpu_only]
print(f"{deephash_ext.__file__}: cuda_compiled={deephash_ext.cuda_compiled()}, {len(ops)} ops, CUDA kernels missing for: {missing or 'none'} (CPU-only: MIH)")
raise SystemExit(1 if missing or not deephash_ext.cuda_compiled() else 0)
PY
fi
if ! "$PY" -c 'import deephash_ext' >/dev/null 2>&1; then
  echo "deephash_ext does not import: stopping" | tee -a "$SUMMARY"; exit 1
fi

# 2. Quick checks of the failures a reading found.
step quick-checks 120 quick.log "$PY" benchmarks/gpu_quick_checks.py --device "$DEVICE" --loops "$LOOPS"

# 3. compute-sanitizer racecheck on tiny cases, where the toolkit has it.
if [[ $DRY == 0 ]] && command -v compute-sanitizer >/dev/null; then
  step racecheck 120 sanitizer.log compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 3 \
    "$PY" benchmarks/gpu_quick_checks.py --device cuda --only sanitizer
else
  echo "compute-sanitizer: $([[ $DRY == 1 ]] && echo 'not run in a dry run' || echo 'not in this toolkit')" >>"$OUTDIR/sanitizer.log"
  [[ $DRY == 1 ]] && step sanitizer-cases-cpu 60 sanitizer.log "$PY" benchmarks/gpu_quick_checks.py --device cpu --only sanitizer
fi

# 4. Tests: the device edge cases on every device, and every test whose id names CUDA.
if [[ $DRY == 1 ]]; then
  step tests 600 tests.log "$PY" -m pytest -q -p no:cacheprovider tests/test_device_edge_cases.py
else
  step tests 120 tests.log "$PY" -m pytest -q -p no:cacheprovider -x --continue-on-collection-errors \
    tests/test_device_edge_cases.py
  step cuda-tests 120 tests.log "$PY" -m pytest -q -p no:cacheprovider --continue-on-collection-errors -k cuda tests
fi

# 5. Benchmarks: each suite bounded by --budget (seconds) inside the step's limit.
BENCH=$OUTDIR/bench.md
if [[ $DRY == 1 ]]; then
  step bench 300 bench.log "$PY" benchmarks/bench_gpu.py --device cpu --size tiny --reps 2 --budget 60 --out "$BENCH"
else
  step bench 200 bench.log "$PY" benchmarks/bench_gpu.py --device cuda --reps 5 --budget 40 --out "$BENCH"
fi

{
  echo
  echo "Total: $(( $(date +%s) - T0 )) s, $FAILED failed step(s)."
  echo
  [[ -f $BENCH ]] && cat "$BENCH"
} >>"$SUMMARY"
rm -f "$BENCH"
cat "$SUMMARY"
[[ $FAILED == 0 ]]
