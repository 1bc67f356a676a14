# KoproGo Grid — the two commands: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench chaos lint format system-demo system-test venv clean

demo: system-demo venv
	$(PY) manage.py demo

test: system-test venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: system-test venv
	$(PY) -m bench

# The grid under faults (worker kills, a Redis restart, PostgreSQL away, malformed requests):
# about fifteen minutes; prints a table and fails if a job is lost or stuck.
chaos: system-test venv
	$(PY) -m bench.chaos

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

system-demo:
	@scripts/system-packages.sh demo

system-test:
	@scripts/system-packages.sh test

venv: $(STAMP)

# llama-cpp-python compiles llama.cpp on first install (about 5 minutes on 2 cores); pip
# caches the wheel, so later virtualenvs install in seconds.
$(STAMP): requirements/coordinator.txt requirements/worker.txt requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	touch $(STAMP)

clean:
	rm -rf var .pytest_cache .ruff_cache
