# Tenantflow — developer entry points. `make demo` and `make test` are the two README commands.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
SERVICES := scripts/services.sh

.PHONY: setup demo test test-unit lint bench screenshot services-up services-down clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip >/dev/null 2>&1 || true
	$(PIP) install -q -r requirements-dev.txt
	$(PIP) install -q --no-deps -e .
	touch $@

demo: setup
	$(PY) -m shared.demo

lint: setup
	$(VENV)/bin/ruff check .

test-unit: setup
	$(PY) -m pytest -q -m "not services and not browser"

test: setup
	bash $(SERVICES) up
	set -a; . ./.services/env; set +a; $(VENV)/bin/ruff check . && $(PY) -m pytest -q; rc=$$?; bash $(SERVICES) down; exit $$rc

bench: setup
	bash $(SERVICES) up
	set -a; . ./.services/env; set +a; $(PY) -m bench.run; rc=$$?; bash $(SERVICES) down; exit $$rc

screenshot: setup
	bash $(SERVICES) up
	set -a; . ./.services/env; set +a; $(PY) -m shared.web.screenshot screenshots/dashboard.png; rc=$$?; bash $(SERVICES) down; exit $$rc

services-up:
	bash $(SERVICES) up

services-down:
	bash $(SERVICES) down

clean:
	rm -rf $(VENV) .services .pytest_cache .ruff_cache .mypy_cache .tenantflow
