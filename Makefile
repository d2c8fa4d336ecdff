# The two commands a new user needs: `make demo` and `make test`. Both set up .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
STAMP_RUN := $(VENV)/.installed

.PHONY: demo test lint typecheck unit servers bench bench-smoke soak clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# What `make demo` needs: chainsight and the demo extra (the real openai and qdrant-client).
$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[demo]'
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(STAMP_RUN)

## Real servers the integration tests use (Debian packages; we are root on these machines).
servers:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! command -v redis-server >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then \
		echo "installing prometheus, prometheus-alertmanager and redis-server (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager redis-server >/dev/null; \
	fi
	@# The Debian packages start system services; the tests start their own on loopback instead.
	@-systemctl stop prometheus prometheus-alertmanager prometheus-node-exporter redis-server >/dev/null 2>&1 || true

demo: $(STAMP_RUN)
	$(BIN)/python -m chainsight demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples grafana
	$(BIN)/ruff format --check src tests benchmarks examples grafana

typecheck: $(STAMP)
	$(BIN)/mypy --strict src grafana/generate.py

unit: $(STAMP)
	$(BIN)/pytest -q -m "not integration and not slow" tests

test: $(STAMP) servers lint typecheck
	$(BIN)/pytest -q tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks --smoke

## About two minutes of every backend failing under load (a 20 s variant runs in `make test`).
soak: $(STAMP) servers
	CHAINSIGHT_SOAK_SECONDS=120 $(BIN)/pytest -q -s tests/integration/test_soak.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis
