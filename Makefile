# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# make demo REDIS_CLUSTER=1 (or make demo-cluster): each region's tier as a Redis Cluster
REDIS_CLUSTER ?=

.PHONY: demo demo-cluster test lint venv clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "geoedge needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || \
	  { echo "could not create a venv: on Debian/Ubuntu run 'sudo apt-get install python3-venv'"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py geodns/_fastudp.c geodns/_coldpath.h geodns/_fastidx.h \
		geodns/_rrl.h geodns/_obs.h edge/_fasthttp.c edge/_nghttp2.c
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-demo: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[demo]'
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed-demo
	$(BIN)/geoedge demo --config examples/demo.toml$(if $(REDIS_CLUSTER), --redis-cluster)

demo-cluster:
	$(MAKE) demo REDIS_CLUSTER=1

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
