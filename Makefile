# From a fresh clone `make test` and `make bench` build what they need first:
#   .venv         CPU torch + upstream Triton (interpreter, CUDA compile check, benchmark, lint)
#   .venv-ascend  CPU torch + triton-ascend + ascendnpu-ir (the Ascend compile check; needs no CANN)
# Upstream triton and triton-ascend both install the `triton` module, hence two environments.
# Each is reused once built: its stamp file is written only after every install step succeeded, so an
# interrupted install is redone, and it is redone when the pins below or pyproject.toml change.
#
#   make test            the test suite (ARGS="-k int4" passes pytest options)
#   make bench           the quick benchmark on whatever device is present (FULL=1: every case; ARGS="--ops ...")
#   make check           the Ascend and CUDA compile checks
#   make lint            ruff

PYTHON ?= python3
TORCH := torch==2.13.0
TRITON := triton==3.9.0
RAY := ray==2.60.0
ASCEND_PACKAGES := triton-ascend==3.2.0 pybind11 numpy ascendnpu-ir==1.2.0
PIP := -m pip install -qq --disable-pip-version-check
VENV := .venv
ASCEND_VENV := .venv-ascend
export TRITON_DEFAULT_FP_FUSION ?= 1

.PHONY: test bench check check-ascend check-ascend-run check-cuda lint env

test: $(VENV)/.installed $(ASCEND_VENV)/.installed
	$(VENV)/bin/python -m pytest -n 2 $(ARGS)

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/run.py $(if $(FULL),,--quick) $(ARGS)

check: check-ascend check-ascend-run check-cuda

# the shipped configs (every other candidate was compiled when its stored verdict was made, and a kernel change
# makes the shipped config's Linalg stale as well); --sample N / --full for more
check-ascend: $(ASCEND_VENV)/.installed
	$(ASCEND_VENV)/bin/python -m atlas_kernels.checks ascend -q --sample 0

# bishengir's output run on this CPU: every kernel's shipped configs on one A2 and one A3 target (vector kernels
# after the HIVM pipeline, tl.dot kernels at the HFusion level)
check-ascend-run: $(ASCEND_VENV)/.installed
	$(ASCEND_VENV)/bin/python -m atlas_kernels.checks ascend-run -q --targets Ascend910B2,Ascend910_9391

# one sampled config per space besides the shipped ones (each job compiles twice)
check-cuda: $(VENV)/.installed
	$(VENV)/bin/python -m atlas_kernels.checks cuda -q --sample 1

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

env: $(VENV)/.installed $(ASCEND_VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python $(PIP) $(TORCH)
	$(VENV)/bin/python $(PIP) $(TRITON) $(RAY) -e '.[cpu,test,bench,distributed]'
	touch $@

$(ASCEND_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(ASCEND_VENV)
	$(ASCEND_VENV)/bin/python $(PIP) $(TORCH) $(ASCEND_PACKAGES)
	$(ASCEND_VENV)/bin/python $(PIP) --no-deps -e .
	touch $@
