#!/usr/bin/env bash
# Builds the CUDA extension on this (GPU-less) machine for the lent GPU machine, whose python3
# is 3.12 with torch 2.11.0+cu130, into .gpu_prebuilt/ (git-ignored). scripts/gpu_check.sh
# loads it instead of compiling when the sources are byte-for-byte the ones it was built from
# and the torch version matches, which saves the build's 2-3 minutes of the session's 15
# minutes of GPU time; otherwise it builds as before.
#
#   /path/to/python3.12 -m venv /tmp/venv211
#   /tmp/venv211/bin/pip install torch==2.11.0 numpy pytest pybind11 ninja setuptools
#   RANKOPS_GPU_PY=/tmp/venv211/bin/python scripts/prebuild_gpu_ext.sh     (~8 min on 2 cores)
#
# then pass carry=[".gpu_prebuilt"] to the device tool's run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${RANKOPS_GPU_PY:-/tmp/venv211/bin/python}"
source scripts/gpu_source_hash.sh

so="_C$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/rankops"
cp -r csrc setup.py pyproject.toml MANIFEST.in README.md "$tmp/"
cp rankops/*.py "$tmp/rankops/"
(cd "$tmp" && CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
  MAX_JOBS="${MAX_JOBS:-2}" RANKOPS_CUDA=1 "$PY" setup.py -q build_ext --inplace)
mkdir -p .gpu_prebuilt
rm -f .gpu_prebuilt/_C*.so
strip --strip-unneeded -o ".gpu_prebuilt/$so" "$tmp/rankops/$so"
rankops_source_hash > .gpu_prebuilt/source.sha256
"$PY" -c "import torch; print(torch.__version__)" > .gpu_prebuilt/torch_version.txt
echo "prebuilt: .gpu_prebuilt/$so ($(du -h ".gpu_prebuilt/$so" | cut -f1)), torch $(cat .gpu_prebuilt/torch_version.txt), sources $(cut -c1-12 .gpu_prebuilt/source.sha256)"
