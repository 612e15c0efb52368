# Tenantflow — developer entry points. `make demo` and `make test` are the two README commands.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
SERVICES := scripts/services.sh

.PHONY: setup demo test test-unit lint bench screenshot services-up services-down package smoke clean

# Clean Python 3.12 and 3.13 venvs holding requirements.txt and the Functions Python worker of that version; the
# worker indexing test (tests/functions/test_worker_indexing.py) indexes function_app.py in each. Rebuilt only when
# requirements.txt changes (the .requirements-installed stamp).
WORKER_VENVS := .venv312 .venv313
PYTHON312 ?= $(shell ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12 2>/dev/null | head -1)
PYTHON313 ?= $(shell ls -d $$HOME/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13 /usr/local/bin/python3.13 2>/dev/null | head -1)

setup: $(VENV)/.installed $(addsuffix /.requirements-installed,$(WORKER_VENVS))

# Python 3.12: the 4.x worker ships inside the Functions host, not on PyPI; its loader's indexing is azure-functions'
# FunctionRegister discovery + get_raw_bindings, which index_with_worker.py runs when azure_functions_runtime is absent.
.venv312/.requirements-installed: requirements.txt
	@test -n "$(PYTHON312)" || { echo "python3.12 not found (needed for the worker indexing test)"; exit 1; }
	rm -rf .venv312 && $(PYTHON312) -m venv .venv312
	.venv312/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
	.venv312/bin/pip install -q -r requirements.txt
	touch $@

# Python 3.13: the worker is azure-functions-runtime, from PyPI.
.venv313/.requirements-installed: requirements.txt
	@test -n "$(PYTHON313)" || { echo "python3.13 not found (needed for the worker indexing test)"; exit 1; }
	rm -rf .venv313 && $(PYTHON313) -m venv .venv313
	.venv313/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
	.venv313/bin/pip install -q -r requirements.txt "azure-functions-runtime>=1.3,<2"
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
	$(PYTHON) -m shared.deploy.package

# `tenantflow smoke` against `tenantflow serve` in front of `tenantflow emulator` (throwaway store, free ports, by pid).
smoke: setup
	VENV=$(VENV) bash scripts/smoke-local.sh

services-up:
	bash $(SERVICES) up

services-down:
	bash $(SERVICES) down

clean:
	rm -rf $(VENV) $(WORKER_VENVS) .services dist .pytest_cache .ruff_cache .mypy_cache .tenantflow
