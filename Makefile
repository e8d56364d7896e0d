# pocoviz: `make serve` sets everything up and serves the app; `make test` sets up and runs every test.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 5006
DATA_DIR ?=

.PHONY: setup serve test lint browser bench assets clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first: the CPU build from this machine's wheel store; a plain `torch` would pull CUDA
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[test]"
	touch $@

serve: setup
	$(VENV)/bin/pocoviz serve --port $(PORT) $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

# Debian's chromium for the browser tests (never `playwright install`: it downloads a browser)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

test: setup browser
	$(PY) -m pytest

# ruff check only: `ruff format` is configured in pyproject.toml but the tree is not formatted with it
# yet (it would re-wrap the hand-aligned argument lists of most modules), so no `ruff format --check`
lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/pocoviz bench

assets: setup
	$(VENV)/bin/pocoviz make-assets --out assets

clean:
	rm -rf $(VENV) .pytest_cache
