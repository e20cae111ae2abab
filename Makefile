# Everything installs itself: `make train MODEL=aae` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
MODEL  ?= aae
ARGS   ?=
# JAX's build: cuda12 when the machine has an NVIDIA GPU (`nvidia-smi -L` works), else cpu;
# `make install ACCEL=cpu|cuda12` chooses.
ACCEL  ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda12 || echo cpu)
EXTRA  := $(if $(filter cuda12,$(ACCEL)),[cuda12],)
STAMP  := $(VENV)/.installed-$(ACCEL)
TEST_STAMP := $(VENV)/.installed-test
# The reference programs' PyTorch (tests, bench): the CPU build that lies on this project's machines.
TORCH  ?= torch==2.13.0

.PHONY: install train test bench clean check-model

install: $(STAMP)

# uv installs the package (it downloads and unpacks in parallel: 8 s here where pip took 18-36 s)
# and byte-compiles it: with PYTHONDONTWRITEBYTECODE set (as on this project's machines) Python
# never writes .pyc files itself, and every process would compile the stack it imports again
# (about 2 s of CPU per run).
$(STAMP): pyproject.toml
	@case "$(ACCEL)" in cpu|cuda12) ;; \
	  *) echo "error: unknown ACCEL='$(ACCEL)'; choose ACCEL=cpu or ACCEL=cuda12" >&2; exit 2;; esac
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(UV) pip install -q --python $(PY) --compile-bytecode -e '.$(EXTRA)'
	touch $(STAMP)

# PyTorch first, with pip (it finds the CPU build on this project's machines; uv would fetch a
# CUDA build), so the test extra's torch>=2.5 is already met; not byte-compiled: that takes 9 s,
# its import without .pyc 2.5 s more, in at most two test processes. Then uv adds pytest, also
# not byte-compiled (its --compile-bytecode compiles the whole venv, PyTorch too): 0.3 s for uv
# against pip's 2.6 s, and pytest's import takes 0.2 s longer in each of its three processes.
# (A venv installed before uv was used has the package but not uv: hence the test -x.)
$(TEST_STAMP): $(STAMP)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --no-compile "$(TORCH)"
	test -x $(UV) || $(PY) -m pip install -q uv
	$(UV) pip install -q --python $(PY) -e '.[test]'
	touch $(TEST_STAMP)

check-model:
	@case "$(MODEL)" in aae|bigan) ;; \
	  *) echo "error: unknown MODEL='$(MODEL)'; choose MODEL=aae or MODEL=bigan" >&2; exit 2;; esac

# check-model comes first: a bad MODEL fails before anything is installed.
train: check-model $(STAMP)
	$(PY) -m experiments.$(MODEL) $(ARGS)

# One pytest worker per core (at most 4): the tiny-model tests are mostly single-threaded compiles.
test: $(TEST_STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses=4 $(ARGS)

# Prints JSON lines: steps/s of aaejax's training path vs PyTorch eager, first-step times.
bench: $(TEST_STAMP)
	$(PY) -m tools.bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
