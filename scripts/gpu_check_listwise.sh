#!/usr/bin/env bash
# The listwise family on a GPU machine: builds rankops with CUDA, runs the listwise tests on
# CUDA and the listwise benchmark, logs under LOG_DIR. Meant to be folded into
# scripts/gpu_check.sh (cuda-kernels branch) when the branches merge.
#
#   scripts/gpu_check_listwise.sh [LOG_DIR]     (default: $OUT, else ./gpu_logs)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG="${1:-${OUT:-./gpu_logs}}"
mkdir -p "$LOG"
LOG="$(cd "$LOG" && pwd)"

CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
  MAX_JOBS="${MAX_JOBS:-16}" RANKOPS_CUDA=1 \
  timeout 300 python3 -m pip install --no-build-isolation --no-deps -e . 2>&1 | tee "$LOG/build_listwise.txt"
(cd /tmp && python3 -c "import rankops; print(rankops.build_info())") | tee "$LOG/build_info_listwise.txt"

TEST_RC=0
timeout 240 python3 -m pytest -q tests/test_listwise.py -k cuda 2>&1 | tee "$LOG/pytest_listwise_cuda.txt" || TEST_RC=$?
BENCH_RC=0
timeout 180 python3 benchmarks/bench_listwise.py --device cuda --out "$LOG/bench_listwise_cuda.md" \
  2>&1 | tee "$LOG/bench_listwise.txt" || BENCH_RC=$?
echo "listwise: tests rc=$TEST_RC, benchmark rc=$BENCH_RC" | tee -a "$LOG/summary.txt"
[ "$TEST_RC" -eq 0 ]
