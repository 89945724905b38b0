# `make demo` and `make test` install what is missing first (through `make setup`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The benchmark's peers: nginx, nginx with ModSecurity and the OWASP CRS, and wrk.
# Redis holds cluster-wide state, such as revoked tokens, and its tests use it.
# gcc and python3-dev build the C extensions ringwall.state._native and
# ringwall.edge.waf._transaction, and the second also needs libmodsecurity-dev.
# nghttp2-client provides h2load, the HTTPS and HTTP/2 benchmark client.
DEBIAN_PACKAGES := nginx-light wrk libnginx-mod-http-modsecurity modsecurity-crs redis-server \
	python3-venv python3-dev gcc libmodsecurity-dev nghttp2-client
STAMP := $(VENV)/.installed
# sslyze checks the HTTPS listener against Mozilla's configurations. It pins
# an older cryptography than Ringwall, so it gets a virtualenv of its own.
SSLYZE_VENV := .venv-sslyze
SSLYZE_STAMP := $(SSLYZE_VENV)/.installed

.PHONY: setup demo test lint bench waf-conformance clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard ringwall/*/*.c ringwall/*/*/*.c)
	@./scripts/install-debian-packages $(DEBIAN_PACKAGES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

$(SSLYZE_STAMP):
	@test -x $(SSLYZE_VENV)/bin/python || $(PYTHON) -m venv $(SSLYZE_VENV)
	$(SSLYZE_VENV)/bin/pip install --quiet --disable-pip-version-check sslyze==6.3.1
	@touch $(SSLYZE_STAMP)

demo: setup
	$(BIN)/ringwall demo

test: setup $(SSLYZE_STAMP)
	./scripts/ensure-redis
	$(BIN)/ruff check ringwall tests bench conformance
	$(BIN)/ruff format --check ringwall tests bench conformance
	$(BIN)/mypy
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check ringwall tests bench conformance
	$(BIN)/ruff format --check ringwall tests bench conformance
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/run.py

# The OWASP CRS 3.3.4 regression suite against a running gateway (docs/waf-conformance.md).
waf-conformance: setup
	$(BIN)/python conformance/waf.py

clean:
	rm -rf $(VENV) $(SSLYZE_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find ringwall -name '*.so' -delete
