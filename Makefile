# Two commands do all set-up on a fresh Linux machine with Python 3.11:
#   make reproduce [PROFILE=default] [RUN=name] [PARAMS="n_seeds=3 max_epochs=2"] [NOTEBOOKS=03-05]
#   make test
#   make lint          (ruff: the linter, then the formatter's check; configured in pyproject.toml)
# and, to refresh the README's example figures (docs/figures/) from a finished run:
#   make readme-figures [RUN=default]
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
RUN ?=
PARAMS ?=
NOTEBOOKS ?=
# test processes (pytest-xdist): one per CPU by default, each test module whole in one process;
# TEST_JOBS=0 runs the suite in this one process.
TEST_JOBS ?= auto

.PHONY: reproduce test lint install bench readme-figures clean-venv

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
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder --durations=25

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The figures the README shows; a run never writes docs/ (runs write figures/<run>/).
README_FIGURES := fig1_overall fig2_forgettability fig3_frequency fig4_cooccurrence fig5_pies fig6_reader_study
# notebook 08's, copied when the run has it (PROFILE=compression adds it to the default run)
OPTIONAL_FIGURES := compression_tradeoff
FIGURES_DIR = $${PRUNECXR_HOME:-.}/figures/$(or $(RUN),default)

readme-figures:
	@for f in $(README_FIGURES); do test -f "$(FIGURES_DIR)/$$f.png" || \
		{ echo "$(FIGURES_DIR)/$$f.png is missing: run make reproduce (with a Chrome for PNGs) first"; exit 1; }; done
	@for f in $(README_FIGURES); do cp "$(FIGURES_DIR)/$$f.png" docs/figures/; done
	@for f in $(OPTIONAL_FIGURES); do test ! -f "$(FIGURES_DIR)/$$f.png" || cp "$(FIGURES_DIR)/$$f.png" docs/figures/; done
	@echo "copied the figures of $(FIGURES_DIR) to docs/figures/"

bench: $(VENV)/.installed
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
