"""remote_admin.py through a Lambda: the real entry point behind the local Invoke API.

The CLI runs as an operator runs it (a process, boto3 from the environment); the function is
`migration_resource.handler:handler` run from the repository root, on a real database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from localdev.lambda_invoke import LambdaInvokeServer, LocalFunction
from tests.alembic.support import ADD_DISPLAY_NAME, ALL_REVISIONS, HEAD, REPO_ROOT
from tests.conftest import Aws
from tests.migration_resource.support import execute, relations, version_rows

SCRIPTS = REPO_ROOT / "scripts"
FUNCTION = "migration-fn"
REGION = "us-east-1"


@contextmanager
def migration_function(database_url: str, **functions: LocalFunction) -> Iterator[str]:
    """Serve the migration Lambda (and any extra functions); yields the endpoint."""
    served = {
        FUNCTION: LocalFunction(
            "migration_resource.handler:handler", REPO_ROOT,
            env={"DATABASE_URL": database_url}, timeout_seconds=120, memory_mb=512,
        ),
        **functions,
    }
    with LambdaInvokeServer(served, region=REGION) as server:
        yield server.endpoint


def run_cli(
    script: str, *args: str, lambda_endpoint: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a script with only the AWS environment an operator would have (no DATABASE_URL)."""
    environment = {k: v for k, v in os.environ.items()
                   if k != "DATABASE_URL" and not k.startswith("AWS_")}
    environment.update(
        AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION, AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing", AWS_ENDPOINT_URL_LAMBDA=lambda_endpoint,
    )
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True,
        env=environment, cwd="/", timeout=180, check=False,
    )


def remote_admin(*args: str, lambda_endpoint: str,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("remote_admin.py", *args, lambda_endpoint=lambda_endpoint, env=env)


def local_admin(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "remote_admin.py"), "--database-url", database_url,
         *args], capture_output=True, text=True, env=environment, cwd="/", timeout=180,
        check=False,
    )


def without_timing(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key != "seconds"}


def test_status_dry_run_and_run_through_the_lambda(database_url: str, db: sa.Engine) -> None:
    with migration_function(database_url) as endpoint:
        status = remote_admin("--function-name", FUNCTION, "status", lambda_endpoint=endpoint)
        assert status.returncode == 0, status.stderr
        assert f"Migration state: empty ({ALL_REVISIONS} pending" in status.stdout
        assert f"Invoking {FUNCTION} (status)..." in status.stderr
        assert f"{FUNCTION} answered in " in status.stderr

        dry = remote_admin("run-migrations", "--dry-run", "--function-name", FUNCTION,
                           lambda_endpoint=endpoint)
        assert dry.returncode == 0, dry.stderr
        assert "-- SQL of revision" in dry.stdout and "CREATE TABLE users" in dry.stdout
        assert relations(db) == []

        unconfirmed = remote_admin("--function-name", FUNCTION, "run-migrations",
                                   lambda_endpoint=endpoint)
        assert unconfirmed.returncode == 2
        assert "--confirm" in unconfirmed.stderr
        assert "Invoking" not in unconfirmed.stderr  # refused before anything was sent
        assert relations(db) == []

        run = remote_admin("--function-name", FUNCTION, "--confirm", "run-migrations",
                           lambda_endpoint=endpoint)
        assert run.returncode == 0, run.stderr
        assert f"Database migrations completed successfully. Revision: base → {HEAD}" in (
            run.stdout
        )
        assert version_rows(db) == [HEAD]


def test_json_answers_have_the_local_shape(database_url: str, db: sa.Engine) -> None:
    with migration_function(database_url) as endpoint:
        through_lambda = remote_admin("--json", "--function-name", FUNCTION, "status",
                                      lambda_endpoint=endpoint)
        local = local_admin("--json", "status", database_url=database_url)
        assert through_lambda.returncode == local.returncode == 0, through_lambda.stderr
        assert without_timing(json.loads(through_lambda.stdout)) == without_timing(
            json.loads(local.stdout))

        run = remote_admin("--json", "--confirm", "--function-name", FUNCTION,
                           "run-migrations", "--target-revision", ADD_DISPLAY_NAME,
                           lambda_endpoint=endpoint)
        assert run.returncode == 0, run.stderr
        answer = json.loads(run.stdout)
        assert answer["ok"] is True and answer["final"] == [ADD_DISPLAY_NAME]
        assert {"ok", "state", "current", "target", "pending", "message", "applied"} <= set(
            answer)
        assert version_rows(db) == [ADD_DISPLAY_NAME]

        # the audit trail now has rows: still the same answer both ways
        through_lambda = remote_admin("--json", "--function-name", FUNCTION, "status",
                                      lambda_endpoint=endpoint)
        local = local_admin("--json", "status", database_url=database_url)
        assert json.loads(through_lambda.stdout)["history"]
        assert without_timing(json.loads(through_lambda.stdout)) == without_timing(
            json.loads(local.stdout))


def test_refusals_and_function_errors_exit_1(database_url: str, db: sa.Engine) -> None:
    broken = LocalFunction("migration_resource.handler:no_such_handler", REPO_ROOT)
    with migration_function(database_url, broken=broken) as endpoint:
        remote_admin("--function-name", FUNCTION, "--confirm", "run-migrations",
                     lambda_endpoint=endpoint)
        execute(db, "UPDATE alembic_version SET version_num = 'f00d'")
        refused = remote_admin("--function-name", FUNCTION, "--confirm", "run-migrations",
                               lambda_endpoint=endpoint)
        assert refused.returncode == 1
        assert "remote_admin.py: inconsistent: alembic_version holds 'f00d'" in refused.stderr
        assert refused.stdout == ""

        failed = remote_admin("--function-name", "broken", "status", lambda_endpoint=endpoint)
        assert failed.returncode == 1
        assert ("remote_admin.py: broken failed: Runtime.HandlerNotFound: Handler "
                "'no_such_handler' missing") in failed.stderr
        as_json = remote_admin("--json", "--function-name", "broken", "status",
                               lambda_endpoint=endpoint)
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout)["error"] == "error"


def test_unknown_function_and_misused_flags_are_usage_errors(database_url: str) -> None:
    with migration_function(database_url) as endpoint:
        missing = remote_admin("--function-name", "nope", "status", lambda_endpoint=endpoint)
        assert missing.returncode == 2
        assert "No Lambda function 'nope' in region us-east-1" in missing.stderr

        both = remote_admin("--function-name", FUNCTION, "status", "--database-url",
                            database_url, lambda_endpoint=endpoint)
        assert both.returncode == 2
        assert "use only one of --database-url, --function-name, --stack-name" in both.stderr

        staged = remote_admin("--function-name", FUNCTION, "--stage", "production", "status",
                              lambda_endpoint=endpoint)
        assert staged.returncode == 2 and "--stage applies to --database-url" in staged.stderr


def create_stack(aws: Aws, name: str, outputs: dict[str, str]) -> None:
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    aws.client("cloudformation").create_stack(StackName=name,
                                              TemplateBody=json.dumps(template))


def test_stack_name_finds_the_function_in_the_outputs(database_url: str, aws: Aws) -> None:
    # GIVEN a deployed stack that names its migration function, and one that does not
    create_stack(aws, "migrations", {"MigrationFunctionName": FUNCTION, "Other": "x"})
    create_stack(aws, "sample-app", {"ApiUrl": "https://example.com"})
    aws_env = {"AWS_ENDPOINT_URL": aws.endpoint}
    with migration_function(database_url) as endpoint:
        # WHEN the operator names the stack
        status = remote_admin("--stack-name", "migrations", "status",
                              lambda_endpoint=endpoint, env=aws_env)
        # THEN the function in its output answers
        assert status.returncode == 0, status.stderr
        assert "Migration state: empty" in status.stdout
        assert f"Invoking {FUNCTION} (status)..." in status.stderr

        wrong = remote_admin("--stack-name", "sample-app", "status",
                             lambda_endpoint=endpoint, env=aws_env)
        assert wrong.returncode == 2
        assert ("Stack 'sample-app' has no output 'MigrationFunctionName' (its outputs: "
                "ApiUrl)") in wrong.stderr

        absent = remote_admin("--json", "--stack-name", "nowhere", "status",
                              lambda_endpoint=endpoint, env=aws_env)
        assert absent.returncode == 2
        assert "Stack 'nowhere' does not exist in region" in absent.stderr
        assert json.loads(absent.stdout)["ok"] is False


