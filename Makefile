# `make demo` and `make test` install what is missing first (through `make setup`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The benchmark's peers: nginx, nginx with ModSecurity and the OWASP CRS, and wrk.
# Redis holds cluster-wide state, such as revoked tokens, and its tests use it.
# gcc and python3-dev build the C extensions ringwall.state._native and
# ringwall.edge.waf._transaction, and the second also needs libmodsecurity-dev.
DEBIAN_PACKAGES := nginx-light wrk libnginx-mod-http-modsecurity modsecurity-crs redis-server \
	python3-venv python3-dev gcc libmodsecurity-dev
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench waf-conformance clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py ringwall/state/_native.c ringwall/edge/waf/_transaction.c
	@./scripts/install-debian-packages $(DEBIAN_PACKAGES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/ringwall demo

test: setup
	./scripts/ensure-redis
	$(BIN)/ruff check ringwall tests bench conformance
	$(BIN)/mypy
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check ringwall tests bench conformance
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/run.py

# The OWASP CRS 3.3.4 regression suite against a running gateway (docs/waf-conformance.md).
waf-conformance: setup
	$(BIN)/python conformance/waf.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find ringwall -name '*.so' -delete
