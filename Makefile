# The two commands of the README: `make demo` (the main job) and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vlmr-installed
# pytest-xdist workers: 2 cores here; each training subprocess is pinned to one thread (tests/helpers.py)
WORKERS ?= 2

.PHONY: install demo test bench-autoload clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip "setuptools>=69,<82" wheel
	$(BIN)/python -m pip install -e '.[test]'
	$(BIN)/vlmr install-hook
	$(BIN)/vlmr doctor --quiet
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/vlmr demo

test: install
	bash tests/install_browser.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup -q tests

bench-autoload: install
	$(BIN)/python benchmarks/bench_autoload.py

clean:
	rm -rf $(VENV) .cache outputs
