# Two set-up commands on a fresh machine: `make run` (the demo) and `make test`.
# Each creates its own virtualenv in .venv on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench tools clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed          ## the demo: built-in backends behind the proxy
	$(BIN)/refractium demo

test: $(BIN)/.installed tools   ## every test, with real clients and servers
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed         ## ruff and mypy (strict)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

bench: $(BIN)/.installed tools  ## figures against a direct connection, HAProxy and sslh
	BENCH_TOOLS=1 scripts/install-tools.sh
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/pool.py
	$(BIN)/python benchmarks/hooks.py
	$(BIN)/python benchmarks/endpoint.py
	$(BIN)/python benchmarks/udp.py

tools:                          ## the Debian tools the tests drive (apt-get when missing)
	scripts/install-tools.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
