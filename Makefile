# Everything installs what it needs: a virtualenv with pinned packages, the pinned CDK CLI
# (npm ci) and, for the tests, the PostgreSQL server binaries (Debian's package) when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# jsii prints a large banner when Node is past its end of life (Node 20 here since
# 2026-10-30); it still works, and the README says which Node versions are supported.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := $(shell node --version 2>/dev/null | sed 's/^v\([0-9]*\).*/\1/')
export JSII_SILENCE_WARNING_DEPRECATED_NODE := 1

.PHONY: test lint unit postgres-binaries benchmark db-start db-stop synth deploy-local destroy-local clean

test: lint unit ## lint, type-check and run the whole suite against a real PostgreSQL

# Reinstalled when any requirements file changes, the engine's own included (requirements.txt
# includes it with -r).
$(STAMP): requirements.txt requirements-dev.txt migration_resource/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# The CDK CLI pinned in package.json/package-lock.json (the suite runs `npx cdk synth`).
NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

postgres-binaries: $(STAMP)
	@$(BIN)/python -m localdev.ensure_postgres

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The suite starts its own throwaway PostgreSQL server (tests/conftest.py) and stops it at
# the end, or uses the server at DATABASE_URL when that is set.
unit: $(STAMP) $(NODE_STAMP) postgres-binaries
	$(BIN)/pytest

benchmark: $(STAMP) $(NODE_STAMP) postgres-binaries
	$(BIN)/python benchmarks/status_check.py
	$(BIN)/python benchmarks/baseline_search.py
	$(BIN)/python benchmarks/no_change_update.py
	$(BIN)/python benchmarks/bundle_size.py
	$(BIN)/python benchmarks/deploy_local.py
	$(BIN)/python benchmarks/long_history.py
	$(BIN)/python benchmarks/production_scale.py
	$(BIN)/python benchmarks/squawk_comparison.py --before benchmarks/squawk_comparison_before.json --output docs/GATE_VS_SQUAWK.md

# A persistent local PostgreSQL (data in .local/postgres) to try remote_admin.py by hand;
# prints the DATABASE_URL to export.
db-start: $(STAMP) postgres-binaries
	@$(BIN)/python -m localdev.postgres start

db-stop: $(STAMP)
	@$(BIN)/python -m localdev.postgres stop

# Synthesize one stage offline into cdk.out (CDK_STAGE=prod for production); no credentials.
CDK_STAGE ?= dev
synth: $(STAMP) $(NODE_STAMP)
	CDK_DISABLE_CLI_TELEMETRY=true AWS_EC2_METADATA_DISABLED=true \
		npx cdk synth --no-notices --quiet -c stage=$(CDK_STAGE)

# The whole deploy offline (localdev/deploy.py): synthesize, start or reuse the local
# PostgreSQL (.local/postgres, the same server as db-start), then play CloudFormation's
# Create/Update of Custom::DatabaseMigration with the function's code from cdk.out.
# Exits non-zero when the deploy failed (after playing the rollback). The local AWS endpoint
# (LOCAL_AWS_PORT) stays up for the admin CLI until destroy-local.
# CDK_STAGE=existing plays the adoption of an existing database: its first deploy finds the
# sample app's tables without migration history (SEED_REVISION's, default the first
# revision's), takes the verified baseline, migrates on, counts the rows kept and invokes the
# team's own function.
# SCENARIO=zero-downtime plays four releases of the sample application instead
# (localdev/zero_downtime.py): expand now, contract one release later, a failed release rolled
# back, with the application answering requests throughout; in its own folder
# (.local/zero-downtime) and servers, removed at the end.
LOCAL_AWS_PORT ?= 54330
SEED_REVISION ?=
SCENARIO ?=
deploy-local: $(STAMP) $(NODE_STAMP) postgres-binaries $(if $(SCENARIO),,synth)
ifeq ($(SCENARIO),zero-downtime)
	@$(BIN)/python -m localdev.zero_downtime
else ifeq ($(SCENARIO),)
	@$(BIN)/python -m localdev.deploy deploy --stage $(CDK_STAGE) --aws-port $(LOCAL_AWS_PORT) \
		$(if $(SEED_REVISION),--seed-revision $(SEED_REVISION))
else
	@echo "deploy-local: no scenario $(SCENARIO); the one there is: SCENARIO=zero-downtime" >&2; exit 2
endif

# Stops the local AWS endpoint and the local PostgreSQL, and removes the database and the
# deploy state: the next deploy-local starts from an empty database.
destroy-local: $(STAMP)
	@$(BIN)/python -m localdev.deploy destroy

clean:
	rm -rf $(VENV) node_modules cdk.out .local/cdk-test.out .pytest_cache .mypy_cache .ruff_cache
