# The compendium's entry points. Each target bootstraps .venv when it is
# missing or older than pyproject.toml (the pins), then runs.
#
#   make book     run every chapter on params/default.yaml and build the HTML book
#   make test     run the test suite
#   make bench    run the benchmarks (minutes; not part of the tests)
#
# PROFILE=params/tiny.yaml make book   runs another profile.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= params/default.yaml
STAMP   := $(VENV)/.installed

.PHONY: book test bench venv clean clean-runs

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

book: $(STAMP)
	$(PY) -m uslib run --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf _build book/chapters/*.ipynb

clean-runs:
	rm -rf runs
