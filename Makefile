# Two commands on a fresh Linux machine with Python >= 3.10:
#   make demo   set up .venv (torch, build deps), build rankops, train and compare rankers
#   make test   set up .venv, build rankops, run the whole test suite
# Variables: VENV (default .venv), TORCH (pip spec used when the venv has no torch),
# RANKOPS_CUDA (auto|1|0), CUDA_HOME, TORCH_CUDA_ARCH_LIST, MAX_JOBS, PYTEST_ARGS.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

export RANKOPS_CUDA RANKOPS_EXPECT_CUDA CUDA_HOME TORCH_CUDA_ARCH_LIST MAX_JOBS

.PHONY: demo test build bench setup clean

setup: $(VENV)/.deps-ok

$(VENV)/.deps-ok: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q "setuptools>=64" wheel ninja numpy "pytest>=7"
	$(PIP) install -q scikit-learn tqdm matplotlib  # the demo's extras
	touch $@

# The tests' independent oracles: trec_eval (metrics), Rax on JAX (losses and metrics) and
# allRank's losses (its package pins torch <= 1.8 and a data stack the losses never use:
# installed without dependencies; tests/test_allrank.py explains).
$(VENV)/.test-deps-ok: $(VENV)/.deps-ok
	$(PIP) install -q pytrec-eval-terrier "jax<0.11" "rax==0.4.0"
	$(PIP) install -q --no-deps "allRank==1.4.3"
	touch $@

# Rebuild when the sources changed or another venv/torch built the in-tree extension.
build: setup
	@want="$$($(PY) -c 'import sys, torch; print(sys.prefix, torch.__version__)') cuda=$(RANKOPS_CUDA)"; \
	have="$$(cat rankops/.build-stamp 2>/dev/null)"; \
	newer="$$(find csrc setup.py -newer rankops/.build-stamp 2>/dev/null | head -n 1)"; \
	if [ ! -f rankops/.build-stamp ] || [ "$$want" != "$$have" ] || [ -n "$$newer" ]; then \
		$(PIP) install --no-build-isolation --no-deps -e . && echo "$$want" > rankops/.build-stamp; \
	else echo "rankops: extension up to date ($$have)"; fi

test: build $(VENV)/.test-deps-ok
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: build
	$(PY) -m rankops.demo --out demo_out

bench: build
	$(PY) benchmarks/bench_pairwise.py
	$(PY) benchmarks/bench_listwise.py
	$(PY) benchmarks/bench_metrics.py

clean:
	rm -rf build dist *.egg-info rankops/_C*.so rankops/.build-stamp
