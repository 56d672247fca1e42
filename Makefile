# Two entry points do all set-up on a fresh machine (Python 3.11+):
#   make demo   - runs the multi-task experiment
#   make test   - ruff, mypy, the whole test suite on every backend, the docs build
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo quickstart test lint docs bench clean

$(STAMP): pyproject.toml constraints.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements/dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/multitask.py --out results

quickstart: $(STAMP)
	$(PY) examples/quickstart.py

lint: $(STAMP)
	$(PY) -m ruff check masked_losses tests examples benchmarks docs
	$(PY) -m mypy masked_losses

# The docs build (mkdocs build --strict) and every docs snippet are tests in tests/test_docs.py.
test: $(STAMP) lint
	$(PY) -m pytest masked_losses tests

# The site in site/ (strict: a warning is an error); `$(PY) -m mkdocs serve` to browse it live.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Side-by-side timings (~2 min on 2 cores): benchmarks/results.{json,md} and the figure in
# docs/assets/benchmarks/ (see docs/benchmarks.md). `$(PY) benchmarks/bench.py --quick` < 1 min.
bench: $(STAMP)
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/plot.py

clean:
	rm -rf $(VENV) site .pytest_cache .hypothesis
