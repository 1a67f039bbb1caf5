# Two set-up commands on a fresh machine: `make run` (the demo) and `make test`.
# Both use one virtualenv in .venv, created on first use. `make run` installs only what
# Refractium needs; `make test`, `make lint` and `make bench` add the development extras.
# Each install leaves a stamp file in .venv, so either command may come first.
# The install compiles the per-connection modules with mypyc (setup.py; REFRACTIUM_COMPILE=0
# skips it) and is redone when one of their sources changes, so nothing runs stale compiled code.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Refractium and its dependencies; the development extras (pytest, mypy, aioquic...) as well.
INSTALLED := $(VENV)/.installed
INSTALLED_DEV := $(VENV)/.installed-dev
# The sources setup.py compiles (its COMPILED list, one "path.py", per line).
COMPILED := $(addprefix src/refractium/,$(shell sed -n 's/^    "\([a-z_/]*\.py\)",$$/\1/p' setup.py))
BUILD_INPUTS := pyproject.toml setup.py $(COMPILED)
# What `make test` expects its first run to load: compiled unless the build was told not to.
BUILT := $(if $(filter 0,$(REFRACTIUM_COMPILE)),pure,compiled)

.PHONY: run test lint bench tools clean

$(VENV)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): $(BUILD_INPUTS) | $(VENV)/pyvenv.cfg
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The extras include Refractium itself, so this install also counts as the plain one.
$(INSTALLED_DEV): $(BUILD_INPUTS) | $(VENV)/pyvenv.cfg
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(INSTALLED)

run: $(INSTALLED)               ## the demo: built-in backends behind the proxy
	$(BIN)/refractium demo

# Every test twice, side by side: on the compiled modules, and on the pure-Python ones
# (REFRACTIUM_PURE=1) in a network namespace of its own (scripts/test-both.sh).
# REFRACTIUM_BUILT tells the build's own test what the first run must find.
test: $(INSTALLED_DEV) tools    ## every test, with real clients and servers
	scripts/test-both.sh $(BIN) $(BUILT)

lint: $(INSTALLED_DEV)          ## ruff, mypy (strict) and the layer contract (import-linter)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(INSTALLED_DEV) tools   ## figures against a direct connection, HAProxy and sslh
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
