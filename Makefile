# The two commands of the README: `make demo` (the main job) and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vlmr-installed
# pytest-xdist workers: 2 cores here; each training subprocess is pinned to one thread (tests/helpers.py)
WORKERS ?= 2

.PHONY: install demo test bench-autoload wheelhouse clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip "setuptools>=69,<82" wheel
	$(BIN)/python -m pip install -e '.[test,eval]'  # eval: lmms-eval for tests/test_lmms_tasks.py (pyproject.toml)
	$(BIN)/vlmr install-hook
	$(BIN)/vlmr init .
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

# Wheels for an offline GPU machine (README "Air-gapped install"): what `llamafactory-cli train` needs on top of
# a stock CUDA image with Python 3.12 and torch 2.11 (benchmarks/gpu/requirements*.txt), plus this package.
WHEELHOUSE ?= wheelhouse
WHEEL_TARGET := --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
wheelhouse: install
	rm -rf $(WHEELHOUSE)
	$(BIN)/python -m pip download --no-deps --only-binary=:all: $(WHEEL_TARGET) -d $(WHEELHOUSE) \
		-r benchmarks/gpu/requirements.txt
	$(BIN)/python -m pip wheel --no-deps -w $(WHEELHOUSE) -r benchmarks/gpu/requirements-sdist.txt
	rm -rf build  # setuptools reuses build/lib: files moved or renamed since the last build would ship too
	$(BIN)/python -m pip wheel --no-deps --no-build-isolation -w $(WHEELHOUSE) .
	@du -b $(WHEELHOUSE)/*.whl | awk '{n++; s+=$$1} END {printf "%d wheels, %.1f MiB\n", n, s/1048576; \
		if (s > 64*1048576) {print "over the 64 MiB budget"; exit 1}}'

clean:
	rm -rf $(VENV) .cache outputs
