#!/usr/bin/env bash
# Builds rankops with CUDA on a GPU machine, runs the CUDA tests and the benchmarks (pairwise,
# listwise, metrics), and keeps everything in a log folder. For a machine with its own torch (e.g. 2.11.0+cu130,
# Python 3.12) and no internet: nothing is downloaded.
#
#   scripts/gpu_check.sh [LOG_DIR]     (default: $OUT, else ./gpu_logs)
#
# Budget: 560 s in all (RANKOPS_GPU_CHECK_BUDGET), about: build 2-3 min with MAX_JOBS=16 (the
# pairwise kernels are one file per pair function, so they compile in parallel), tests 2 min,
# benchmarks 3 min. The tests do not stop at the first failure (a first GPU run should show
# them all).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG="${1:-${OUT:-./gpu_logs}}"
mkdir -p "$LOG"
LOG="$(cd "$LOG" && pwd)"
START=$(date +%s)
# Every step's timeout is its own cap or what is left of the whole budget, whichever is
# smaller, so the script ends inside one device call (10 minutes) with its logs written.
BUDGET="${RANKOPS_GPU_CHECK_BUDGET:-560}"
step() { echo "== $* ($(( $(date +%s) - START ))s)" | tee -a "$LOG/summary.txt"; }
left() {  # left CAP: seconds for the next step
  local rest=$(( BUDGET - ($(date +%s) - START) ))
  [ "$rest" -lt "$1" ] && echo $(( rest > 5 ? rest : 5 )) || echo "$1"
}

step "machine"
{ nvidia-smi || true; python3 --version; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"; } \
  2>&1 | tee "$LOG/nvidia_smi.txt"

step "build"
BUILD_RC=0
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 RANKOPS_CUDA=1 \
  timeout "$(left 300)" python3 -m pip install --no-build-isolation --no-deps -e . 2>&1 | tee "$LOG/build.txt" \
  || BUILD_RC=$?
step "build rc=$BUILD_RC"
if [ "$BUILD_RC" -ne 0 ]; then
  echo "build failed, see $LOG/build.txt" | tee -a "$LOG/summary.txt"
  exit "$BUILD_RC"
fi
(cd /tmp && python3 -c "import rankops, torch; print(rankops.build_info()); print(torch._C._dispatch_dump('rankops::pairwise_loss'))") \
  2>&1 | tee "$LOG/build_info.txt"

step "tests"
TEST_RC=0
RANKOPS_REQUIRE_CUDA=1 timeout "$(left 200)" python3 -m pytest -q --maxfail=25 -rf tests -k cuda 2>&1 | tee "$LOG/pytest_cuda.txt" \
  || TEST_RC=$?
step "tests rc=$TEST_RC"

BENCH_RC=0
step "benchmarks"
for b in pairwise listwise metrics; do
  timeout "$(left 150)" python3 benchmarks/bench_$b.py --device cuda --out "$LOG/bench_${b}_cuda.md" \
    2>&1 | tee "$LOG/bench_$b.txt" || BENCH_RC=$?
done

step "done"
{
  echo "---- summary ----"
  echo "build: rc=$BUILD_RC"
  echo "tests (-k cuda): rc=$TEST_RC; $(tail -n 1 "$LOG/pytest_cuda.txt" 2>/dev/null || true)"
  echo "benchmarks: rc=$BENCH_RC"
  echo "logs: $LOG"
} | tee -a "$LOG/summary.txt"
[ "$TEST_RC" -eq 0 ]
