# Two commands from a fresh clone: `make demo` and `make test`. Each sets itself up first.
PYTHON ?= python3
# The CPU build of torch (a wheel on disk on the team's machines); override for a CUDA machine.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist
CHROMIUM := /usr/bin/chromium

.PHONY: demo test test-all lint format data browser clean

$(STAMP): pyproject.toml setup.py src/alexnet/models/lrn.c Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "alexnet needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)" -e '.[dev,onnx,visualize,serve]'
	touch $@

# Fashion-MNIST from Debian's dataset-fashion-mnist where apt is there and we are root; elsewhere the
# loader downloads the official files.
data:
	@if [ ! -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing dataset-fashion-mnist"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

# Debian's Chromium for the browser test of `alexnet serve` (slow: CI and test-all); Playwright drives it
# through its executable path, since Playwright's own browser download cannot reach its servers from here.
browser:
	@if [ ! -x $(CHROMIUM) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# `alexnet train` with no flags: the default recipe (fashion-mnist) into runs/fashion-mnist-<time>/.
demo: $(STAMP) data
	$(BIN)/alexnet train

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The fast suite; with CI=true (CI sets it) also the slow tests: real data, torch.compile of every model.
TEST_MARKERS := $(if $(filter true,$(CI)),not gpu,not slow and not gpu)

test: lint data $(if $(filter true,$(CI)),browser)
	$(BIN)/pytest -m "$(TEST_MARKERS)"

test-all: $(STAMP) data browser
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
