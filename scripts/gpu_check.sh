#!/usr/bin/env bash
# Builds rankops with CUDA on a GPU machine, runs the CUDA tests, the benchmarks (pairwise,
# listwise, metrics) and, with the time left, compute-sanitizer, and keeps everything in a
# log folder. For a machine with its own torch (e.g. 2.11.0+cu130, Python 3.12) and no
# internet: nothing is downloaded.
#
#   scripts/gpu_check.sh [LOG_DIR]     (default: $OUT, else ./gpu_logs)
#
# LOG_DIR gets at most 7 files (the device tool brings back 8): summary.txt, pytest_cuda.txt,
# bench_{pairwise,listwise,metrics}_cuda.md, sanitizer.txt and raw_logs.tar.gz (every step's
# whole output, refreshed after each step).
#
# Budget: 560 s in all (RANKOPS_GPU_CHECK_BUDGET), about: build a few seconds with an
# up-to-date .gpu_prebuilt/ (scripts/prebuild_gpu_ext.sh, carried along), else 2-3 min with
# MAX_JOBS=16 (the pairwise kernels are one file per pair function, so they compile in
# parallel); tests 2-4 min; benchmarks 3 min; the sanitizer gets what is left. The tests do
# not stop at the first failure (a first GPU run should show them all).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG="${1:-${OUT:-./gpu_logs}}"
mkdir -p "$LOG"
LOG="$(cd "$LOG" && pwd)"
RAW="$(mktemp -d /tmp/rankops_gpu_logs.XXXX)"
START=$(date +%s)
# Every step's timeout is its own cap or what is left of the whole budget, whichever is
# smaller, so the script ends inside one device call (10 minutes) with its logs written.
BUDGET="${RANKOPS_GPU_CHECK_BUDGET:-560}"
step() {
  echo "== $* ($(( $(date +%s) - START ))s)" | tee -a "$LOG/summary.txt"
  tar -czf "$LOG/raw_logs.tar.gz" -C "$RAW" . 2>/dev/null || true
}
left() {  # left CAP: seconds for the next step
  local rest=$(( BUDGET - ($(date +%s) - START) ))
  [ "$rest" -lt "$1" ] && echo $(( rest > 5 ? rest : 5 )) || echo "$1"
}
rest() { echo $(( BUDGET - ($(date +%s) - START) )); }

step "machine"
{ nvidia-smi || true; python3 --version; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"; } \
  2>&1 | tee "$RAW/machine.txt"

step "build"
# rankops is imported from this tree (tests, benchmarks, the checks below) whichever way it
# was built.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
source scripts/gpu_source_hash.sh
BUILD_RC=0
use_prebuilt() {  # .gpu_prebuilt/ from scripts/prebuild_gpu_ext.sh, carried along
  local so; so="_C$(python3 -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")"
  [ -f ".gpu_prebuilt/$so" ] || { echo "no prebuilt .gpu_prebuilt/$so"; return 1; }
  [ "$(rankops_source_hash)" = "$(cat .gpu_prebuilt/source.sha256)" ] \
    || { echo "prebuilt extension is stale (sources changed)"; return 1; }
  [ "$(python3 -c 'import torch; print(torch.__version__)')" = "$(cat .gpu_prebuilt/torch_version.txt)" ] \
    || { echo "prebuilt extension is for torch $(cat .gpu_prebuilt/torch_version.txt)"; return 1; }
  cp ".gpu_prebuilt/$so" rankops/
  if ! (cd /tmp && python3 -c "import rankops, sys; sys.exit(0 if rankops.build_info()['cuda'] else 1)"); then
    echo "prebuilt extension does not load here"; rm -f "rankops/$so"; return 1
  fi
  echo "using the prebuilt extension .gpu_prebuilt/$so (sources $(cut -c1-12 .gpu_prebuilt/source.sha256))"
}
PREBUILT=0
use_prebuilt > "$RAW/build.txt" 2>&1 && PREBUILT=1
cat "$RAW/build.txt"
if [ "$PREBUILT" -eq 0 ]; then
  # nvcc: /usr/local/cuda where it exists, else setup.py takes the toolkit of the nvcc on PATH
  if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
  TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 RANKOPS_CUDA=1 \
    timeout "$(left 300)" python3 -m pip install --no-build-isolation --no-deps -e . 2>&1 | tee -a "$RAW/build.txt" \
    || BUILD_RC=$?
fi
step "build rc=$BUILD_RC: $(head -n 1 "$RAW/build.txt")"
if [ "$BUILD_RC" -ne 0 ]; then
  tail -n 40 "$RAW/build.txt" >> "$LOG/summary.txt"
  step "build failed (its last lines are above; all of it in raw_logs.tar.gz)"
  exit "$BUILD_RC"
fi
(cd /tmp && python3 -c "import rankops, torch; print(rankops.build_info()); print(torch._C._dispatch_dump('rankops::pairwise_loss'))") \
  2>&1 | tee "$RAW/build_info.txt" | head -n 1 | tee -a "$LOG/summary.txt"

step "tests"
# the pairwise CUDA file first (issue 3's own tests), so that a run cut short by the budget
# still has them; then every other test with a CUDA parameter
TEST_RC=0
RANKOPS_REQUIRE_CUDA=1 timeout "$(left 150)" python3 -m pytest -q --maxfail=25 -rf --durations=5 \
  tests/test_pairwise_cuda.py 2>&1 | tee "$LOG/pytest_cuda.txt" || TEST_RC=$?
step "tests test_pairwise_cuda.py rc=$TEST_RC: $(tail -n 1 "$LOG/pytest_cuda.txt")"
RC=0
RANKOPS_REQUIRE_CUDA=1 timeout "$(left 200)" python3 -m pytest -q --maxfail=25 -rf --durations=5 \
  tests -k cuda --ignore=tests/test_pairwise_cuda.py 2>&1 | tee -a "$LOG/pytest_cuda.txt" || RC=$?
if [ "$RC" -ne 0 ]; then TEST_RC=$RC; fi
step "tests -k cuda (the others) rc=$RC: $(tail -n 1 "$LOG/pytest_cuda.txt")"

BENCH_RC=0
step "benchmarks"
for b in pairwise listwise metrics; do
  RC=0
  timeout "$(left 150)" python3 benchmarks/bench_$b.py --device cuda --out "$LOG/bench_${b}_cuda.md" \
    2>&1 | tee "$RAW/bench_$b.txt" || RC=$?
  if [ "$RC" -ne 0 ]; then BENCH_RC=$RC; fi
  step "bench_$b rc=$RC"
done
# metrics on tied scores, ties="average" (one thread per list on CUDA): appended to the
# metrics table
RC=0
timeout "$(left 60)" python3 benchmarks/bench_metrics.py --device cuda --tied --out "$RAW/bench_metrics_tied.md" \
  2>&1 | tee "$RAW/bench_metrics_tied.txt" || RC=$?
{ echo; cat "$RAW/bench_metrics_tied.md" 2>/dev/null || true; } >> "$LOG/bench_metrics_cuda.md"
if [ "$RC" -ne 0 ]; then BENCH_RC=$RC; fi
step "bench_metrics --tied rc=$RC"
# ordered pair accuracy (one thread per list on CUDA) against the reference and
# scikit-learn's per-query AUC: appended too
RC=0
timeout "$(left 60)" python3 benchmarks/bench_metrics.py --device cuda --opa --repeats 3 \
  --out "$RAW/bench_metrics_opa.md" 2>&1 | tee "$RAW/bench_metrics_opa.txt" || RC=$?
{ echo; cat "$RAW/bench_metrics_opa.md" 2>/dev/null || true; } >> "$LOG/bench_metrics_cuda.md"
if [ "$RC" -ne 0 ]; then BENCH_RC=$RC; fi
step "bench_metrics --opa rc=$RC"

# compute-sanitizer (memcheck, then racecheck) over every kernel path on small inputs, with
# what is left of the budget; skipped where the tool is missing or refuses the device.
SAN_RC=skipped
SAN="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
if [ -n "$SAN" ] && [ "$(rest)" -gt 40 ]; then
  SAN_RC=0
  for tool in memcheck racecheck; do
    [ "$(rest)" -gt 20 ] || break
    step "sanitizer $tool"
    RC=0
    # no caching allocator: each tensor its own cudaMalloc, so memcheck sees an access past
    # a tensor's end (inside a cached segment it would not)
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "$(left 200)" "$SAN" --tool "$tool" --error-exitcode 9 \
      --print-limit 20 python3 scripts/gpu_sanitize.py >> "$LOG/sanitizer.txt" 2>&1 || RC=$?
    echo "---- $tool rc=$RC" >> "$LOG/sanitizer.txt"
    if [ "$RC" -ne 0 ]; then SAN_RC=$RC; fi
    step "sanitizer $tool rc=$RC"
  done
fi

step "done"
{
  echo "---- summary ----"
  echo "build: rc=$BUILD_RC ($( [ "$PREBUILT" -eq 1 ] && echo prebuilt || echo built here))"
  echo "tests (test_pairwise_cuda.py, then -k cuda): rc=$TEST_RC; $(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$LOG/pytest_cuda.txt" | tr '\n' ' ')"
  echo "benchmarks: rc=$BENCH_RC"
  echo "sanitizer: rc=$SAN_RC (9 = errors found; 124 = out of time)"
  echo "logs: $LOG"
} | tee -a "$LOG/summary.txt"
tar -czf "$LOG/raw_logs.tar.gz" -C "$RAW" . 2>/dev/null || true
[ "$TEST_RC" -eq 0 ]
