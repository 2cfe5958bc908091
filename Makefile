# The compendium's entry points. Each target bootstraps .venv when it is
# missing or older than pyproject.toml (the pins), then runs.
#
#   make book     run every chapter on params/default.yaml and build the HTML book
#   make test     run the whole test suite (the slow tier too: chapters executed, the book built)
#   make test-fast  the tests not marked slow (no chapter execution, no book build)
#   make bench    run the benchmarks (minutes; not part of the tests)
#
# PROFILE=params/tiny.yaml make book   runs another profile.
# make venv TF='tensorflow[and-cuda]==2.21.0'  .venv with TensorFlow's CUDA build (GPU); the choice
#                                      is kept in .venv/.installed, so later rebuilds keep it
# make book PYTHON=python3.12          makes .venv with that interpreter (default:
#                                      python3, else the newest supported python3.X).

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= params/default.yaml
STAMP   := $(VENV)/.installed
# TensorFlow in place of the pinned tensorflow-cpu, e.g. for NVIDIA GPUs:
#   make venv TF='tensorflow[and-cuda]==2.21.0'   (keep the pinned version)
# The choice is recorded in $(STAMP) (a line TF=...) and is the default of every later rebuild (after a
# pull changes pyproject.toml), so tensorflow-cpu is never installed over it; rm -rf .venv forgets it.
TF      ?= $(patsubst TF=%,%,$(filter TF=%,$(if $(wildcard $(STAMP)),$(file < $(STAMP)))))
# The pins of pyproject.toml, [test] included, without tensorflow-cpu: what a TF=... build installs.
py_reqs := import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(r for r in p["dependencies"] + p["optional-dependencies"]["test"] if not r.startswith("tensorflow-cpu")))
venv_tf  = $(PY) -m pip uninstall --quiet -y tensorflow-cpu && $(PY) -c '$(py_reqs)' > $(VENV)/requirements-tf.txt && $(PY) -m pip install --quiet -r $(VENV)/requirements-tf.txt '$(TF)' && $(PY) -m pip install --quiet --no-deps -e .
venv_cpu = $(PY) -m pip install --quiet -e '.[test]'

# The Pythons every pin has a wheel for, oldest first: python-support.toml
# records each pin's, and tests/test_environment.py checks that this list,
# requires-python, the README and environment.yml agree with that record.
PY_SUPPORTED := 3.11 3.12 3.13

# The interpreter that makes a new $(VENV): $(PYTHON) when it is a supported
# Python; failing that, unless PYTHON was given (command line or environment),
# the newest python3.X of PY_SUPPORTED that runs. Decided only when $(STAMP)
# is rebuilt, before any of its recipe runs, so an unsuitable Python stops make
# at once with one line rather than deep inside pip.
py_version = $(shell $(1) -c 'import sys; print(*sys.version_info[:2], sep=".")' 2>/dev/null)
py_is      = $(call py_is_,$(call py_version,$(1)))
py_is_     = $(if $(1),is Python $(1),does not run)
py_ok      = $(filter $(PY_SUPPORTED),$(call py_version,$(1)))
py_first   = $(if $(1),$(if $(call py_ok,$(firstword $(1))),$(firstword $(1)),$(call py_first,$(wordlist 2,$(words $(1)),$(1)))))
py_reverse = $(if $(1),$(call py_reverse,$(wordlist 2,$(words $(1)),$(1))) $(firstword $(1)))
py_named   = $(addprefix python,$(call py_reverse,$(PY_SUPPORTED)))
py_or      = $(subst $(py_space),$(py_comma)$(py_space),$(strip $(filter-out $(lastword $(1)),$(1)))) or $(lastword $(1))
py_empty   :=
py_space   := $(py_empty) $(py_empty)
py_comma   := ,
ifeq ($(origin PYTHON),file)
py_tries   = $(PYTHON) $(py_named)
py_tried   = $(PYTHON) $(call py_is,$(PYTHON)) and none of $(call py_or,$(py_named)) runs here
py_hint    =
else
py_tries   = $(PYTHON)
py_tried   = PYTHON=$(PYTHON) $(call py_is,$(PYTHON))
py_hint    = $(eval py_hint := $(call py_first,$(py_named)))$(py_hint)
endif
py_new     = $(eval py_new := $(call py_first,$(py_tries)))$(py_new)
py_need    = the pins need Python $(call py_or,$(PY_SUPPORTED)) (python-support.toml)
py_goal    = make $(or $(MAKECMDGOALS),venv)
py_stop_new  = $(py_tried); $(py_need). $(if $(py_hint),Choose $(py_hint),Install one and choose it): $(py_goal) PYTHON=$(or $(py_hint),python$(lastword $(PY_SUPPORTED)))
py_stop_venv = $(PY) $(call py_is,$(PY)); $(py_need). Remove $(VENV) (rm -rf $(VENV)) and run $(py_goal) again
py_for_venv  = $(if $(wildcard $(PY)),$(if $(call py_ok,$(PY)),,$(error $(py_stop_venv))),$(or $(py_new),$(error $(py_stop_new))) -m venv $(VENV))

.PHONY: book test test-fast bench venv clean clean-runs

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(py_for_venv)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TF),$(venv_tf),$(venv_cpu))
	@printf 'TF=%s\n' '$(TF)' > $(STAMP)

book: $(STAMP)
	$(PY) -m uslib run --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf _build book/chapters/*.ipynb

clean-runs:
	rm -rf runs
