# Set-up and everyday commands. Every target builds .venv from scratch when it is missing,
# so a fresh machine needs nothing but python3 (3.11+).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean torch-index

# torch's CPU build by default on a Linux machine without an NVIDIA GPU: PyPI's Linux torch is
# the CUDA build (several GB of nvidia-* wheels), so PyTorch's CPU index is added, unless the
# pinned torch installs without any index (a local wheel, as on the machines the tests run on).
# `make install TORCH_INDEX=` turns it off; a CUDA index (e.g. .../whl/cu126) picks a GPU build.
TORCH_PIN   := $(shell sed -n 's/^torch==//p' constraints.txt)
TORCH_INDEX ?= $(shell if [ "$$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1 \
	&& ! $(PYTHON) -m pip install -q --dry-run --ignore-installed --no-deps --no-index \
	'torch==$(TORCH_PIN)' \
	>/dev/null 2>&1; then echo https://download.pytorch.org/whl/cpu; fi)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e '.[test]'
	touch $(STAMP)

# Where torch comes from on this machine (empty: PyPI or a local wheel).
torch-index:
	@echo "$(TORCH_INDEX)"

install: $(STAMP)

# The main job: a small hyperparameter search on a local Ray over the bundled Omniglot splits.
demo: install
	$(BIN)/metagan search search_spaces/demo.yaml --name demo-$$(date +%Y%m%d-%H%M%S)

# The whole suite, slow end-to-end tests included (CI runs this).
test: install
	$(BIN)/ruff check metagan tests benchmarks
	$(BIN)/mypy metagan
	$(BIN)/python tests/run_suite.py

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check metagan tests benchmarks
	$(BIN)/mypy metagan

bench: install
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs results .pytest_cache
