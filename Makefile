# The README's two commands: `make train` and `make test` (lint, import contracts, the suite, the
# installed wheel). Both set everything up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EPOCHS ?= 100
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data train test lint wheel-check clean

setup: $(VENV)/.installed data

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# Debian's full Fashion-MNIST (60k/10k IDX files): offline data for training and tests.
data:
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; \
	else echo "apt-get not found: pass --data-dir to train.py (see README)"; fi

train: setup
	$(BIN)/python train.py --recipe recipes/default.toml --epochs $(EPOCHS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest
	PYTHON=$(PYTHON) bash tests/check_wheel.sh

wheel-check: setup
	PYTHON=$(PYTHON) bash tests/check_wheel.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
