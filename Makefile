# Two entry points a fresh machine needs: `make demo` and `make test`. Both build .venv first,
# from uv.lock: exactly the versions the suite was run with, whatever was released since.
# Only Python 3.11+ and git are assumed; uv (pinned below) is bootstrapped into .tools if the
# machine has no uv of that version.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell uv --version 2>/dev/null | grep -q '^uv $(UV_VERSION)[ ]' && command -v uv || echo .tools/bin/uv)
# Never download a Python: use the one named above.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: demo test test-latest test-lowest lint bench lock clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"

$(BIN)/.installed: pyproject.toml uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync -q --locked --extra dev
	touch $@

demo: $(BIN)/.installed
	$(BIN)/stratacache demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest

# Both ends of every range in pyproject.toml, each in its own environment (the lock is not
# touched); test-lowest pins every runtime dependency to its floor (scripts/floors.py).
# Run them before every release and whenever the lock is refreshed (`make lock`).
test-latest: | $(UV)
	$(UV) venv -q --allow-existing .venv-latest
	$(UV) pip install -q --python .venv-latest --upgrade --refresh --resolution highest -e ".[dev]"
	$(UV) pip freeze --python .venv-latest | grep -iE '^(litellm|langchain-core|llama-index-core|openai|pydantic|redis|numpy)=='
	.venv-latest/bin/python -m pytest

test-lowest: | $(UV)
	$(UV) venv -q --allow-existing .venv-lowest
	$(PYTHON) scripts/floors.py > .venv-lowest/floors.txt
	$(UV) pip install -q --python .venv-lowest --upgrade --resolution lowest-direct \
		-c .venv-lowest/floors.txt -e ".[dev]"
	$(UV) pip freeze --python .venv-lowest | grep -iE '^(litellm|langchain-core|llama-index-core|openai|pydantic|redis|numpy)=='
	.venv-lowest/bin/python -m pytest

# Refresh the lock to today's newest releases; then run test-latest and test-lowest.
lock: | $(UV)
	$(UV) lock --upgrade

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/ruff format --check src tests benchmarks scripts examples
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) .venv-latest .venv-lowest .tools .pytest_cache .mypy_cache .ruff_cache
