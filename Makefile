# earthloc: the commands are `make demo`, `make test` and `make lint`.
VENV ?= .venv
PY := $(VENV)/bin/python
export EARTHLOC_SHARED ?= $(abspath ../shared)

.PHONY: setup test lint demo clean browser

setup: $(VENV)/.installed browser

# The browser tests drive Debian's Chromium through Playwright (PyPI, in the test extra); apt-get it when missing.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "make setup: chromium missing; install it as root: apt-get install chromium" >&2; exit 1; }

# torch/torchvision are plain requirements: on this machine pip takes 2.14.1 / 0.29.1 from local disk.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,ray,dev]'
	touch $@

test: setup
	$(PY) -m pytest -q

# the layers (import-linter, pyproject [tool.importlinter]), ruff (import order, pyupgrade, docstrings) and mypy
lint: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check earthloc tests benchmarks
	$(VENV)/bin/mypy

demo: setup
	$(VENV)/bin/earthloc demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
