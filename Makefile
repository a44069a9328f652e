# Everything installs what it needs: a virtualenv with pinned packages and, for the tests,
# the PostgreSQL server binaries (Debian's package) when they are missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint unit postgres-binaries benchmark db-start db-stop clean

test: lint unit ## lint, type-check and run the whole suite against a real PostgreSQL

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

postgres-binaries: $(STAMP)
	@$(BIN)/python -m localdev.ensure_postgres

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The suite starts its own throwaway PostgreSQL server (tests/conftest.py) and stops it at
# the end, or uses the server at DATABASE_URL when that is set.
unit: $(STAMP) postgres-binaries
	$(BIN)/pytest

benchmark: $(STAMP) postgres-binaries
	$(BIN)/python benchmarks/status_check.py
	$(BIN)/python benchmarks/baseline_search.py
	$(BIN)/python benchmarks/no_change_update.py

# A persistent local PostgreSQL (data in .local/postgres) to try remote_admin.py by hand;
# prints the DATABASE_URL to export.
db-start: $(STAMP) postgres-binaries
	@$(BIN)/python -m localdev.postgres start

db-stop: $(STAMP)
	@$(BIN)/python -m localdev.postgres stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
