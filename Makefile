# gammaray: everyday commands. `make demo` and `make test` work on a fresh machine from nothing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch is installed before the project so that pip does not pull CUDA packages.
# On a GPU machine, install your CUDA torch into the venv first (or set TORCH_SPEC to it).
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo lint format test test-all bench bench-quick bench-gpu bench-scale clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel >/dev/null
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[test]"
	touch $@

# The main job: the demo grid on a local Ray cluster, then its scaling-law report (E held at the
# corpus's known entropy rate: grids/demo.yaml says why).
demo: setup
	$(VENV)/bin/gammaray submit grids/demo.yaml
	$(VENV)/bin/gammaray report --grid demo --e known

# Lint and format checks (CI runs them before the tests); `make format` rewrites the files.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Two workers: the orchestrator's tests (Ray clusters) in one, one after another; the rest share
# both (tests/conftest.py).
test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

# Benchmarks (timings live in BENCHMARKS.md, never in tests). `bench` runs the CPU suite
# (≤ 15 minutes) and rewrites its results; `bench-quick` (about 3.5 minutes) prints the headline
# figures as one JSON line; `bench-gpu` needs a CUDA GPU and a CUDA build of torch; `bench-scale`
# times the commands on grids of 100 to 10,000 points.
bench: setup
	$(PY) benchmarks/run.py --write

bench-quick: setup
	$(PY) benchmarks/run.py --quick

bench-gpu: setup
	$(PY) benchmarks/run.py --gpu --write

bench-scale: setup
	$(PY) benchmarks/run.py --scale --write

clean:
	rm -rf $(VENV) gammaray-runs .pytest_cache
