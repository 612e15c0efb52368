# Tenantflow — developer entry points. `make demo` and `make test` are the two README commands.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
SERVICES := scripts/services.sh

.PHONY: setup demo test test-unit lint bench screenshot services-up services-down package clean

WORKER_VENV := .venv313
PYTHON313 ?= $(shell ls -d $$HOME/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13 /usr/local/bin/python3.13 2>/dev/null | head -1)

setup: $(VENV)/.installed $(WORKER_VENV)/.installed

# The real Azure Functions Python worker (Python 3.13) that indexes function_app.py in a test.
$(WORKER_VENV)/.installed: requirements.txt
	@test -n "$(PYTHON313)" || { echo "python3.13 not found (needed for the worker indexing test)"; exit 1; }
	$(PYTHON313) -m venv $(WORKER_VENV)
	$(WORKER_VENV)/bin/pip install -q "azure-functions-runtime>=1.3,<2" "azure-functions>=1.20,<3"
	touch $@

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
	$(VENV)/bin/mypy shared function_app.py

test-unit: setup
	$(PY) -m pytest -q -m "not services and not browser"

test: setup
	bash $(SERVICES) up
	set -a; . ./.services/env; set +a; $(VENV)/bin/ruff check . && $(VENV)/bin/mypy shared function_app.py && \
		$(PY) -m pytest -q; rc=$$?; bash $(SERVICES) down; exit $$rc

bench: setup
	bash $(SERVICES) up
	set -a; . ./.services/env; set +a; $(PY) -m bench.run; rc=$$?; bash $(SERVICES) down; exit $$rc

screenshot: setup
	bash $(SERVICES) up
	set -a; . ./.services/env; set +a; $(PY) -m shared.web.screenshot screenshots/dashboard.png; rc=$$?; bash $(SERVICES) down; exit $$rc

# The deployable zip (what `azd deploy` ships): the repo minus .funcignore, at dist/tenantflow-app.zip.
package:
	$(PYTHON) -m shared.app_package

services-up:
	bash $(SERVICES) up

services-down:
	bash $(SERVICES) down

clean:
	rm -rf $(VENV) $(WORKER_VENV) .services dist .pytest_cache .ruff_cache .mypy_cache .tenantflow
