# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv and install keyart with the pinned versions first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint format bench clean constraints

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip wheel setuptools
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,train]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/keyart demo

test: $(STAMP)
	bash infra/system-packages.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Refresh the pins after changing dependencies in pyproject.toml.
constraints:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^keyart' > constraints.txt

clean:
	rm -rf $(VENV) .keyart .pytest_cache .ruff_cache
