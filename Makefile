# Two commands set up everything on a fresh machine: `make demo` and `make test`.
# TORCH names the torch requirement installed first (CPU build here: TORCH=torch==2.13.0).
PYTHON ?= python3
TORCH ?= torch
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Torch first, so that torch-geometric and friends do not pull a different build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# The main job on the built-in offline dataset: featurize + split, train, evaluate, predict.
demo: $(VENV)/.installed
	$(BIN)/molsam featurize chembl2321810 --split scaffold --out $(DEMO_DIR)/data
	rm -rf $(DEMO_DIR)/run
	$(BIN)/molsam train recipes/quickstart.yaml --out $(DEMO_DIR)/run
	$(BIN)/molsam evaluate $(DEMO_DIR)/run --out $(DEMO_DIR)/evaluation.json
	$(BIN)/molsam predict $(DEMO_DIR)/run "$$($(BIN)/molsam datasets chembl2321810)" -o $(DEMO_DIR)/predictions.csv
	@echo "demo outputs in $(DEMO_DIR)/: data/ (store, splits, invalid rows), run/ (checkpoints, metrics, curves.png), evaluation.json, predictions.csv"

test: $(VENV)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .hypothesis
