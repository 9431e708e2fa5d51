# molabench — everything a fresh machine needs is behind these targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test tables reproduce bench lint clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes; the package itself is editable.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: install
	$(PY) -m molabench.demo

# Every test runs torch on one thread, so one worker per core (pytest-xdist); a file's tests stay on one
# worker (module fixtures such as the 2-rank DDP launch run once). `make test workers=0`: in this process.
workers ?= auto
test: install
	$(PY) -m pytest --durations=15 $(if $(filter 0,$(workers)),,-n $(workers) --dist loadfile)

# make reproduce [budget=smoke|cpu|paper] [tables=[2,4,5]] [dry_run=true] [launcher=slurm]: plans, runs what is
# missing (re-run to continue), writes results/tables/table<N>_*, results/figures/, results/report/index.html.
# Data: MOLABENCH_DATA (a folder of datasets; default ../shared/data when it exists, else data/).
budget ?= cpu
MOLABENCH_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
reproduce: install
	MOLABENCH_DATA=$(MOLABENCH_DATA) $(PY) -m molabench.reproduce budget=$(budget) $(if $(tables),tables=$(tables)) $(if $(dry_run),dry_run=$(dry_run)) $(if $(launcher),launcher=$(launcher))

tables: install
	$(PY) -m molabench.report.tables

bench: install
	@set -e; $(PY) scripts/bench_machine.py; for script in scripts/bench_*.py; do [ $$script = scripts/bench_machine.py ] && continue; echo "== $$script"; $(PY) $$script; done

lint: install
	$(VENV)/bin/ruff check src tests scripts

clean:
	rm -rf $(VENV) results/runs results/hydra results/tables
