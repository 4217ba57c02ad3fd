# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv, installs what it needs and runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.base: pyproject.toml tensorstore/_codec_kernel.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.base
	$(PY) -m tensorstore demo

# Test stores live in memory where the machine has /dev/shm: every LMDB commit syncs to
# disk, and on a shared machine's busy disk those syncs took a third to a half of the run.
TEST_TMPDIR ?= $(shell test -d /dev/shm -a -w /dev/shm && echo /dev/shm || echo $${TMPDIR:-/tmp})

# -q: a line of dots per 80 tests, then the -ra summary (skips, failures) and the counts.
# More options with PYTEST_ARGS, e.g. `make test PYTEST_ARGS=--durations=25`.
PYTEST_ARGS ?=
test: $(VENV)/.test
	TMPDIR=$(TEST_TMPDIR) $(PY) -m pytest -q $(PYTEST_ARGS)

# The slow benchmarks and soak tests `make test` skips (every test marked slow, in every
# suite); benchmark figures go to docs/benchmarks.md.
bench: $(VENV)/.test
	$(PY) -m pytest -m slow --benchmark-enable

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
