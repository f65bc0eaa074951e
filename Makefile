# immutrail developer tasks. See CONTRIBUTING.md.
SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
# `uv` from PATH, else the one `pip install uv` puts into $(PYTHON)'s site-packages.
UV ?= $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
PYTEST_ARGS ?=

export UV_PYTHON_DOWNLOADS := never
# Trust the system CA store as well as uv's bundled roots (TLS-intercepting proxies).
export UV_SYSTEM_CERTS ?= 1

.PHONY: venv lint test demo bench clean

venv:
	@$(UV) --version >/dev/null 2>&1 || { \
	  echo "uv not found; installing it with pip"; \
	  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
	    $(PYTHON) -m pip install --quiet uv; }
	@if [ -f uv.lock ]; then $(UV) sync --locked --extra test; \
	 else $(UV) sync --extra test; fi

lint: venv
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

test: lint
	scripts/with-postgres.sh $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/python -m immutrail.cli.main demo

bench: venv
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f src/immutrail/ledger/_native*.so
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune \
	  -exec rm -rf {} +
