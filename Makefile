# crossgrad's commands.  `make test` and `make bench` set up .venv on first use.
# On a machine that already has torch and jax (a GPU box without a package index),
# pass the interpreter instead and nothing is installed:  make bench PYTHON=python3
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch: on this project's development and CI machines
# `torch==2.13.0` is served from local disk, while an unpinned torch pulls a
# several-GB CUDA build.  The pin lives here, not in pyproject.toml; override it
# (make install TORCH_SPEC=torch) where a CUDA build is wanted.
TORCH_SPEC ?= torch==2.13.0

ifeq ($(origin PYTHON),command line)
RUN := PYTHONPATH=$(CURDIR) $(PYTHON)
SETUP :=
else
RUN := $(VENV)/bin/python
SETUP := $(VENV)/.installed
endif

.PHONY: install test test-slow test-all parity fuzz lint typecheck bench sweep sparse-bench operators-bench keep wheel-check clean

install: $(SETUP)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e ".[torch,jax,test,bench,dev]"
	touch $@

# Two pytest workers where pytest-xdist is installed (the suite is dispatch- and
# compile-bound: 5 min of pytest on two cores, 2121 tests, 2026-12-02, about twice that in one); one process elsewhere.
WORKERS ?= 2
XDIST = $$($(RUN) -c "import xdist" 2>/dev/null && echo "-n $(WORKERS)")
test: $(SETUP)
	$(RUN) -m pytest -q -rs -m "not slow" $(XDIST)

# The slow suite make test leaves out (tests/conftest.py SLOW: the examples end to end,
# the leak checks, the largest jax compilations); test-all runs everything.
test-slow: $(SETUP)
	$(RUN) -m pytest -q -rs -m slow $(XDIST)

test-all: $(SETUP)
	$(RUN) -m pytest -q -rs $(XDIST)

parity: $(SETUP)
	$(RUN) -m pytest -q -m parity

# The property-based parity suite with many fresh random cases (make test runs a
# few fixed ones); FUZZ_PROFILE=ci repeats make test's cases.
FUZZ_PROFILE ?= fuzz
fuzz: $(SETUP)
	CROSSGRAD_FUZZ_PROFILE=$(FUZZ_PROFILE) $(RUN) -m pytest -q tests/test_fuzz.py tests/test_fuzz_programs.py

lint: $(SETUP)
	$(RUN) -m ruff check crossgrad tests benchmarks examples

# mypy --strict on the package, on a user's script (tests/typing/user_script.py) and on a
# user's mistakes it must flag (tests/typing/user_mistakes.py).
typecheck: $(SETUP)
	$(RUN) -m mypy --strict crossgrad tests/typing/user_script.py tests/typing/user_mistakes.py

# ARGS go to pytest (ARGS="-k dispatch" selects cases); the sweep, the sparse and the
# operator benchmarks run after a full run.
bench: $(SETUP)
	$(RUN) -m benchmarks $(ARGS)
	$(if $(ARGS),,$(RUN) -m benchmarks.sweep)
	$(if $(ARGS),,$(RUN) -m benchmarks.sparse)
	$(if $(ARGS),,$(RUN) -m benchmarks.operators)

# Runs write under benchmarks/runs/ (ignored); keep one in the committed benchmarks/results/:
#   make keep REPORT=benchmarks/runs/<name>.json
keep: $(SETUP)
	$(RUN) -m benchmarks.report --keep $(REPORT)

# The sweep alone: 40 generated functions, four forms of a layer (benchmarks/sweep.py).
sweep: $(SETUP)
	$(RUN) -m benchmarks.sweep $(ARGS)

# The sparse benchmark alone (benchmarks/sparse.py): sparse Jacobians and Hessians against
# the dense routes and asdex (where installed: pip install asdex); ARGS="-k rosenbrock" selects.
sparse-bench: $(SETUP)
	$(RUN) -m benchmarks.sparse $(ARGS)

# The differential-operator benchmark alone (benchmarks/operators.py): Laplacians against
# folx, the biharmonic against nested Laplacians, trace estimators against traceax (peers
# where installed: pip install folx traceax); ARGS="-k laplacian" selects.
operators-bench: $(SETUP)
	$(RUN) -m benchmarks.operators $(ARGS)

# Not part of `make test`: the wheel built, installed with the CPU torch pin into a fresh
# virtualenv (outside this tree, so the checkout is not on the path), and the README's
# first example run with it.
CHECK_DIR ?= /tmp/crossgrad-wheel-check
wheel-check:
	rm -rf $(CHECK_DIR) && $(PYTHON) -m venv $(CHECK_DIR)
	$(CHECK_DIR)/bin/python -m pip install -q --upgrade pip build
	$(CHECK_DIR)/bin/python -m build -q --wheel --outdir $(CHECK_DIR)/dist .
	$(CHECK_DIR)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(CHECK_DIR)/bin/python -m pip install -q "$$(ls $(CHECK_DIR)/dist/*.whl)[torch,jax]"
	$(CHECK_DIR)/bin/python -c "import re, pathlib; print(re.search(r'\x60\x60\x60python\n(.*?)\x60\x60\x60', pathlib.Path('README.md').read_text(), re.S).group(1))" > $(CHECK_DIR)/readme_example.py
	cd $(CHECK_DIR) && bin/python readme_example.py

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
