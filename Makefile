# Set-up and everyday commands. Every target builds .venv from scratch when it is missing,
# so a fresh machine needs nothing but python3 (3.10+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The main job: a small hyperparameter search on a local Ray over the bundled Omniglot splits.
demo: install
	$(BIN)/metagan search search_spaces/demo.yaml --name demo-$$(date +%Y%m%d-%H%M%S)

# The whole suite, slow end-to-end tests included (CI runs this).
test: install
	$(BIN)/ruff check metagan tests benchmarks
	$(BIN)/mypy metagan
	$(BIN)/python -m pytest -q -rs --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check metagan tests benchmarks
	$(BIN)/mypy metagan

bench: install
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs results .pytest_cache
