# Two commands on a fresh Debian machine with Python 3.11:
#   make run    set up a virtual environment and start the dashboard
#   make test   set up (with test tools and Chromium) and run every test
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup setup-dev browser lint bench

$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

# Debian's Chromium for the browser tests (Playwright's own browser download is never used).
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

run: setup
	$(VENV)/bin/streamlit run app.py

test: setup-dev browser
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: setup-dev
	$(PY) -m ruff check .

bench: setup
	$(PY) benchmarks/bench_engine.py
