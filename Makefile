# KoproGo Grid — the two commands: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-quick chaos screenshots lint format system-demo system-test browser-assets venv clean

demo: system-demo venv
	$(PY) manage.py demo

test: system-test venv browser-assets
	$(PY) -m pytest $(PYTEST_ARGS)

bench: system-test venv
	$(PY) -m bench

bench-quick: system-test venv
	$(PY) -m bench --quick

# The grid under faults (worker kills, a Redis restart, PostgreSQL away, malformed requests):
# about fifteen minutes; prints a table and fails if a job is lost or stuck.
chaos: system-test venv
	$(PY) -m bench.chaos

# A PNG of every web page (tests/browser/pages.py), French and English, desktop and phone, in
# var/screenshots/ for the docs: a grid of its own, signed in as a member and an operator.
screenshots: system-test venv browser-assets
	$(PY) -m tests.browser.screenshots var/screenshots

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

system-demo:
	@scripts/system-packages.sh demo

system-test:
	@scripts/system-packages.sh test

# axe-core, the accessibility rules the browser tests inject, pinned and checked (var/vendor/).
browser-assets:
	@scripts/axe-core.sh >/dev/null

venv: $(STAMP)

# llama-cpp-python compiles llama.cpp on first install (about 5 minutes on 2 cores); pip
# caches the wheel, so later virtualenvs install in seconds.
$(STAMP): requirements/coordinator.txt requirements/worker.txt requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	touch $(STAMP)

# The pages' messages: refresh the French and Dutch catalogues from the code (new messages appear
# untranslated; tests/test_web_languages.py fails until each has its translation). The app compiles
# them itself when it starts (app/web/i18n.py).
translations: venv
	$(VENV)/bin/pybabel extract -F babel.cfg -k lazy_gettext --no-location --sort-output -o var/messages.pot app
	$(VENV)/bin/pybabel update -i var/messages.pot -d app/translations --no-fuzzy-matching --ignore-obsolete

clean:
	rm -rf var .pytest_cache .ruff_cache
