# Two commands do all set-up on a fresh Linux machine with Python 3.11:
#   make reproduce [PROFILE=default] [RUN=name] [PARAMS="n_seeds=3 max_epochs=2"] [NOTEBOOKS=03-05]
#   make test
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
RUN ?=
PARAMS ?=
NOTEBOOKS ?=

.PHONY: reproduce test install bench clean-venv

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed

reproduce: $(VENV)/.installed
	$(PY) -m prunecxr run --profile $(PROFILE) $(if $(RUN),--run $(RUN)) \
		$(if $(NOTEBOOKS),--notebooks $(NOTEBOOKS)) $(foreach p,$(PARAMS),-p "$(p)")

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
