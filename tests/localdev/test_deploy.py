"""`make deploy-local` end to end: the CLI as a process, the function from the synthesized asset.

Every scenario is a full local deploy: `python -m localdev.deploy` synthesizes nothing itself
(the module synthesizes once) but plays the whole CloudFormation side against a real
PostgreSQL, the local AWS endpoint (moto, the Invoke API) and an HTTPS ResponseURL. The dev
scenarios share one local environment (its own folder and ports, never the developer's
`.local`) and run in order, as successive deploys of one stack would. Rows are inserted
before every deploy, and every row inserted so far must still be there after it. Where a
scenario needs the application to answer, the sample application's function (which
deploy-local does not deploy) is run from the same asset through the local Invoke API.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa

from localdev import deploy as local_deploy
from localdev import local_aws
from localdev.lambda_python import LambdaPythonMissing, find_lambda_python
from localdev.local_cloudformation import CREDENTIALS
from localdev.postgres import free_port
from localdev.releases import end_history_at
from tests.alembic.support import (
    ADD_EMAIL_DOMAIN,
    ALL_REVISIONS,
    HEAD,
    ORDER,
    REPO_ROOT,
    USERS_NAME_NULLABLE,
)
from tests.cdk_app.support import SHARED_OUTDIR, project_copy, synthesize
from tests.migration_resource.support import execute, relations, version_rows

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE", "1")

STACK = "DbMigrations-dev-Application"
FUNCTION = f"{STACK}-MigrationFunction"
APP_FUNCTION = f"{STACK}-SampleAppFunction"
NEW_REVISION = "7a8b9c0d1e2f"
NEW_MIGRATION = textwrap.dedent(f'''\
    """add users timezone

    Revision ID: {NEW_REVISION}
    Revises: {HEAD}
    """
    import sqlalchemy as sa

    from alembic import op

    revision = "{NEW_REVISION}"
    down_revision = "{HEAD}"
    branch_labels = None
    depends_on = None


    def upgrade() -> None:
        op.add_column("users", sa.Column("timezone", sa.String(64), nullable=True))


    def downgrade() -> None:
        op.drop_column("users", "timezone")
''')


@dataclass
class LocalDeploy:
    """One local environment: its folder, its PostgreSQL and local AWS ports."""

    local_dir: Path
    postgres_port: int = field(default_factory=free_port)
    aws_port: int = field(default_factory=free_port)
    kept: list[str] = field(default_factory=list)  # tags of the rows inserted so far

    def run(self, command: str = "deploy", *, stage: str = "dev",
            cdk_out: Path = SHARED_OUTDIR) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "localdev.deploy", command, "--stage", stage,
             "--cdk-out", str(cdk_out), "--local-dir", str(self.local_dir),
             "--postgres-port", str(self.postgres_port), "--aws-port", str(self.aws_port)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    def admin(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """scripts/remote_admin.py as a user runs it, with the endpoint deploy-local printed."""
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith("AWS_")}
        environment.update(AWS_ENDPOINT_URL=self.endpoint, AWS_DEFAULT_REGION="us-east-1",
                           AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        return subprocess.run([sys.executable, "scripts/remote_admin.py", *arguments],
                              cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
                              timeout=300, check=False)

    def aws(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def state(self, stage: str = "dev") -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(
            (self.local_dir / f"deploy-state-{stage}.json").read_text())
        return loaded

    def engine(self, stage: str = "dev") -> sa.Engine:
        return sa.create_engine(
            self.environment.postgres.url_for(local_deploy.stage_database(stage)),
            poolclass=sa.NullPool)

    def start_database(self, stage: str = "dev") -> None:
        local_deploy.start_database(self.environment, stage)

    @property
    def environment(self) -> local_deploy.LocalEnvironment:
        return local_deploy.LocalEnvironment(local_dir=self.local_dir,
                                             postgres_port=self.postgres_port,
                                             aws_port=self.aws_port)

    @property
    def function_log(self) -> str:
        return (self.local_dir / "aws" / "lambda.log").read_text()

    # -- the data that must survive every deploy -------------------------------------------
    def insert_rows(self, stage: str = "dev") -> None:
        """A user with a project and a task, tagged; kept in `kept` for later checks."""
        tag = f"row{len(self.kept)}"
        engine = self.engine(stage)
        try:
            with engine.begin() as connection:
                columns = {c["name"] for c in sa.inspect(connection).get_columns("users")}
                values = {"email": f"{tag}@example.com"}
                if "name" in columns:  # until the revision that drops it
                    values["name"] = tag
                user_id = connection.execute(
                    sa.text(f"INSERT INTO users ({', '.join(values)}) VALUES "
                            f"({', '.join(':' + key for key in values)}) RETURNING id"),
                    values).scalar_one()
                project_id = connection.execute(sa.text(
                    "INSERT INTO projects (owner_id, name) VALUES (:owner, :name) RETURNING id"),
                    {"owner": user_id, "name": tag}).scalar_one()
                connection.execute(sa.text(
                    "INSERT INTO tasks (project_id, title) VALUES (:project, :title)"),
                    {"project": project_id, "title": tag})
        finally:
            engine.dispose()
        self.kept.append(tag)

    def assert_rows_kept(self, stage: str = "dev") -> None:
        engine = self.engine(stage)
        try:
            with engine.connect() as connection:
                found = connection.execute(sa.text(
                    "SELECT u.email FROM users u JOIN projects p ON p.owner_id = u.id "
                    "JOIN tasks t ON t.project_id = p.id "
                    "WHERE p.name = t.title AND u.email = p.name || '@example.com'"),
                ).scalars().all()
        finally:
            engine.dispose()
        assert sorted(found) == sorted(f"{tag}@example.com" for tag in self.kept)


def sample_app(local: LocalDeploy, cdk_out: Path, path: str = "/tasks") -> dict[str, Any]:
    """GET `path` from the sample application's Lambda as `cdk_out` defines it, through the
    local Invoke API, beside the deployed migration function (same asset, secret, endpoint):
    its answer, and the tail of its log under `log`."""
    files = local_aws.LocalAwsFiles.under(local.local_dir)
    template = json.loads((cdk_out / f"{STACK}.template.json").read_text())
    function = next(resource["Properties"] for key, resource in template["Resources"].items()
                    if key.startswith("SampleAppFunction")
                    and resource["Type"] == "AWS::Lambda::Function")
    asset = (cdk_out / f"asset.{function['Code']['S3Key'].removesuffix('.zip')}").resolve()
    # what the local AWS gives a function rather than its template, as the deploy gave it
    migration = files.functions()[FUNCTION]
    runtime = migration.env["PYTHONPATH"].split(":", 1)[1]  # the pinned boto3
    given = {key: migration.env[key] for key in (*local_deploy.LOCAL_VARIABLES,
                                                 *CREDENTIALS)}
    variables = {key: value for key, value in function["Environment"]["Variables"].items()
                 if isinstance(value, str)}
    files.put_function(replace(
        migration, name=APP_FUNCTION, handler=function["Handler"], code_dir=str(asset),
        timeout_seconds=float(function["Timeout"]), memory_mb=int(function["MemorySize"]),
        env={**variables, **given, "PYTHONPATH": f"{asset}:{runtime}"}))
    event = {"version": "2.0", "rawPath": path,
             "requestContext": {"http": {"method": "GET", "path": path}}}
    answer = local.aws("lambda").invoke(FunctionName=APP_FUNCTION, LogType="Tail",
                                        Payload=json.dumps(event).encode())
    assert "FunctionError" not in answer, answer["Payload"].read()
    response: dict[str, Any] = json.loads(answer["Payload"].read())
    response["log"] = base64.b64decode(answer["LogResult"]).decode()
    return response


def events(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The statuses of the console's event lines, in order."""
    return [line.split(" | ")[2].strip() for line in result.stdout.splitlines()
            if line.count(" | ") >= 4]


def lambda_python_available() -> None:
    # The bundle holds CPython 3.12 wheels: without a 3.12 the local deploy cannot run the
    # function, and that must fail loudly rather than pass unnoticed.
    try:
        find_lambda_python()
    except LambdaPythonMissing as missing:
        pytest.fail(str(missing))


@contextmanager
def local_environment(prefix: str) -> Iterator[LocalDeploy]:
    # pytest's tmp folders are private to us; the postgres user must reach the data folder
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    environment = LocalDeploy(local_dir=folder)
    try:
        yield environment
    finally:
        environment.run("destroy")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def local() -> Iterator[LocalDeploy]:
    lambda_python_available()
    synthesize("dev", outdir=SHARED_OUTDIR)  # once for the module; the bundle is reused
    with local_environment("deploy-local-") as environment:
        yield environment


@pytest.fixture(scope="module")
def first(local: LocalDeploy) -> subprocess.CompletedProcess[str]:
    return local.run()


@pytest.fixture(scope="module")
def with_new_migration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cdk.out of a checkout where a developer added a revision, snapshots on before it."""
    root = project_copy(tmp_path_factory.mktemp("new-migration"))
    (root / "alembic" / "versions" / f"20261124_1000_{NEW_REVISION}_add_users_timezone.py"
     ).write_text(NEW_MIGRATION)
    outdir = root / "cdk.out"
    synthesize("dev", outdir=outdir, changes={"snapshotBeforeMigrate": True}, project_root=root)
    return outdir


# -- the dev stack, deploy after deploy ------------------------------------------------------
def test_fresh_database_is_created(local: LocalDeploy,
                                   first: subprocess.CompletedProcess[str]) -> None:
    assert first.returncode == 0, first.stdout + first.stderr
    assert events(first) == ["CREATE_IN_PROGRESS", "CREATE_COMPLETE", "CREATE_COMPLETE"]
    lines = first.stdout.splitlines()
    assert "State: empty" in lines
    assert f"Revision: base → {HEAD} ({ALL_REVISIONS} applied)" in lines
    assert "Snapshot: none" in lines  # the dev stage does not snapshot
    assert f"{STACK}.MigrationFunctionName = {FUNCTION}" in lines
    assert f"export AWS_ENDPOINT_URL={local.endpoint}" in first.stdout
    engine = local.engine()
    try:
        assert version_rows(engine) == [HEAD]
    finally:
        engine.dispose()
    # the function ran from the synthesized asset, in its own process, through the Invoke API
    assert "START RequestId" in local.function_log
    assert "MigrationsApplied" in local.function_log
    functions = json.loads((local.local_dir / "aws" / "functions.json").read_text())
    assert functions[FUNCTION]["code_dir"].startswith(str(SHARED_OUTDIR / "asset."))


def test_deploying_again_changes_nothing(local: LocalDeploy,
                                         first: subprocess.CompletedProcess[str]) -> None:
    local.insert_rows()
    again = local.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[0] == f"{STACK} (local): no changes"
    assert events(again) == []
    local.assert_rows_kept()


def test_admin_cli_reaches_the_local_function(local: LocalDeploy,
                                              first: subprocess.CompletedProcess[str]) -> None:
    # the stack's output names the function, as in AWS
    status = local.admin("--stack-name", STACK, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Migration state: up_to_date" in status.stdout
    assert f"current: {HEAD}" in status.stdout
    dry_run = local.admin("--function-name", FUNCTION, "--json", "run-migrations", "--dry-run")
    assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
    answer = json.loads(dry_run.stdout)
    assert answer["ok"] is True
    assert answer["state"] == "up_to_date"
    # a name the local AWS does not know is the usage error it would be in AWS
    missing = local.admin("--stack-name", "NoSuchStack", "status")
    assert missing.returncode == 2
    assert "Stack 'NoSuchStack' does not exist" in missing.stderr


def test_a_new_migration_file_is_applied_after_a_snapshot(
        local: LocalDeploy, first: subprocess.CompletedProcess[str],
        with_new_migration: Path) -> None:
    local.insert_rows()
    result = local.run(cdk_out=with_new_migration)
    assert result.returncode == 0, result.stdout + result.stderr
    assert events(result) == ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE", "UPDATE_COMPLETE"]
    lines = result.stdout.splitlines()
    assert any(line.startswith("  MigrationsHash: ") for line in lines)
    assert "  SnapshotBeforeMigrate: false → true" in lines
    assert "State: pending_migrations" in lines
    assert f"Revision: {HEAD} → {NEW_REVISION} (1 applied)" in lines
    snapshot_id = next(line for line in lines if line.startswith("Snapshot: ")).split(": ")[1]
    assert snapshot_id.startswith("premigrate-")
    # the snapshot exists in the local AWS, and was available before the migration ran
    snapshots = local.aws("rds").describe_db_snapshots(
        SnapshotType="manual")["DBSnapshots"]
    assert [s["DBSnapshotIdentifier"] for s in snapshots] == [snapshot_id]
    log = local.function_log
    assert log.index(f"Snapshot {snapshot_id} is available") < log.index(
        "Running 1 pending migrations")
    engine = local.engine()
    try:
        assert version_rows(engine) == [NEW_REVISION]
        with engine.connect() as connection:
            audit = connection.execute(sa.text(
                "SELECT snapshot_id FROM migration_audit WHERE revision = :revision "
                "AND outcome = 'succeeded'"), {"revision": NEW_REVISION}).scalars().all()
            columns = [c["name"] for c in sa.inspect(connection).get_columns("users")]
        assert audit == [snapshot_id]
        assert "timezone" in columns
    finally:
        engine.dispose()
    local.assert_rows_kept()
    # and the deployed function now carries the new revision: the admin CLI sees it
    status = local.admin("--stack-name", STACK, "status")
    assert f"current: {NEW_REVISION}" in status.stdout


def test_redeploying_the_previous_release_works(
        local: LocalDeploy, first: subprocess.CompletedProcess[str],
        with_new_migration: Path) -> None:
    # GIVEN the database at NEW_REVISION, which the last deploy applied (and recorded)
    local.insert_rows()
    engine = local.engine()
    try:
        before = relations(engine)
        # WHEN the previous release is deployed again: the checkout without NEW_REVISION's file
        previous = local.run()
        # THEN the Update succeeds without touching the database: ahead, no snapshot
        assert previous.returncode == 0, previous.stdout + previous.stderr
        assert events(previous) == ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE", "UPDATE_COMPLETE"]
        lines = previous.stdout.splitlines()
        assert f"  TargetRevision: {NEW_REVISION} → {HEAD}" in lines
        assert "State: ahead" in lines
        assert f"Revision: {NEW_REVISION} → {NEW_REVISION} (0 applied)" in lines
        assert "Snapshot: none" in lines
        assert len(local.aws("rds").describe_db_snapshots(
            SnapshotType="manual")["DBSnapshots"]) == 1  # the new migration's, no other
        assert version_rows(engine) == [NEW_REVISION]
        assert relations(engine) == before
        local.assert_rows_kept()
        # AND the previous release's application serves, warning about the newer revision
        served = sample_app(local, SHARED_OUTDIR)
        assert served["statusCode"] == 200, served
        assert json.loads(served["body"])["total"] == len(local.kept)
        assert ("Auto-migration: the database is ahead of this code (newer revisions: "
                f"{NEW_REVISION}): serving") in served["log"]
        # WHEN the newer release is deployed again
        forward = local.run(cdk_out=with_new_migration)
        # THEN it finds its own revision there: up to date, nothing applied
        assert forward.returncode == 0, forward.stdout + forward.stderr
        assert events(forward)[-1] == "UPDATE_COMPLETE"
        assert "State: up_to_date" in forward.stdout.splitlines()
        assert f"Revision: {NEW_REVISION} → {NEW_REVISION} (0 applied)" in forward.stdout
        assert "Snapshot: none" in forward.stdout.splitlines()
        assert version_rows(engine) == [NEW_REVISION]
    finally:
        engine.dispose()
    local.assert_rows_kept()


def test_the_same_checkout_again_changes_nothing(
        local: LocalDeploy, first: subprocess.CompletedProcess[str],
        with_new_migration: Path) -> None:
    local.insert_rows()
    again = local.run(cdk_out=with_new_migration)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[0] == f"{STACK} (local): no changes"
    local.assert_rows_kept()


def test_migrations_disabled_on_deploy_then_enabled_again(
        local: LocalDeploy, first: subprocess.CompletedProcess[str],
        with_new_migration: Path) -> None:
    # GIVEN a database one revision behind the deployed checkout
    local.insert_rows()
    engine = local.engine()
    try:
        execute(engine, "ALTER TABLE users DROP COLUMN timezone",
                f"UPDATE alembic_version SET version_num = '{HEAD}'")
        before = relations(engine)
        # WHEN the stage turns migrations on deploy off (cdk.json's migrateOnDeploy: false)
        disabled_out = with_new_migration.parent / "cdk.out.disabled"
        synthesize("dev", outdir=disabled_out, project_root=with_new_migration.parent,
                   changes={"snapshotBeforeMigrate": True, "migrateOnDeploy": False})
        disabled = local.run(cdk_out=disabled_out)
        # THEN the deploy succeeds, reporting the state, with no snapshot and no change
        assert disabled.returncode == 0, disabled.stdout + disabled.stderr
        assert "  MigrateOnDeploy: true → false" in disabled.stdout.splitlines()
        assert events(disabled)[-1] == "UPDATE_COMPLETE"
        assert "State: pending_migrations" in disabled.stdout.splitlines()
        assert f"Revision: {HEAD} → {HEAD} (0 applied)" in disabled.stdout.splitlines()
        assert "Snapshot: none" in disabled.stdout.splitlines()
        assert relations(engine) == before
        assert version_rows(engine) == [HEAD]
        assert ("Migrations on deploy are disabled (migrateOnDeploy is false): the database "
                f"is pending_migrations at {HEAD}; nothing was changed") in local.function_log
        # WHEN it is turned back on and deployed
        enabled = local.run(cdk_out=with_new_migration)
        # THEN the Update migrates, after a snapshot
        assert enabled.returncode == 0, enabled.stdout + enabled.stderr
        assert f"Revision: {HEAD} → {NEW_REVISION} (1 applied)" in enabled.stdout.splitlines()
        assert "Snapshot: premigrate-" in enabled.stdout
        assert version_rows(engine) == [NEW_REVISION]
    finally:
        engine.dispose()
    local.assert_rows_kept()


def test_unknown_revision_fails_cleanly_and_rolls_back(
        local: LocalDeploy, first: subprocess.CompletedProcess[str],
        with_new_migration: Path) -> None:
    # GIVEN a database at a revision no script defines and nobody recorded (written by hand:
    # no audit row traces its ancestry), and other migrations to deploy
    local.insert_rows()
    engine = local.engine()
    try:
        execute(engine, "UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
        with engine.connect() as connection:
            assert connection.execute(sa.text(
                "SELECT count(*) FROM migration_audit WHERE revision = 'f00dfeedbeef'"),
            ).scalar_one() == 0
        before = relations(engine)
        deployed = local.state()["properties"]
        # WHEN deploying the repository's checkout (without the new revision)
        result = local.run()
        # THEN the Update fails with the short reason, and the rollback completes
        assert result.returncode == 1, result.stdout + result.stderr
        assert events(result) == ["UPDATE_IN_PROGRESS", "UPDATE_FAILED",
                                  "UPDATE_ROLLBACK_IN_PROGRESS", "UPDATE_IN_PROGRESS",
                                  "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"]
        failed = next(line for line in result.stdout.splitlines() if "UPDATE_FAILED" in line)
        assert ("DatabaseMigration inconsistent: alembic_version holds 'f00dfeedbeef': no "
                "script defines it, no audit row traces its ancestry; nothing was changed. "
                "Restore its revision file, or stamp the schema's revision with --baseline REV. "
                "See docs/RUNBOOK.md#inconsistent") in failed
        # (the reason fits the console: it is not repeated)
        assert "The deploy failed; the function's log is in " in result.stdout
        # the database is untouched, and the state still holds the last good properties
        assert relations(engine) == before
        assert version_rows(engine) == ["f00dfeedbeef"]
        assert local.state()["properties"] == deployed
        assert "Stack rollback in progress: the database is left as it is" in local.function_log
        local.assert_rows_kept()
        # the rollback put the previous code back: the function still knows NEW_REVISION
        functions = json.loads((local.local_dir / "aws" / "functions.json").read_text())
        assert functions[FUNCTION]["code_dir"].startswith(str(with_new_migration))
        stack = local.aws("cloudformation").describe_stacks(StackName=STACK)["Stacks"][0]
        assert stack["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
        # and, unlike a database ahead of the code, the application does not serve it
        refused = sample_app(local, with_new_migration)
        assert refused["statusCode"] == 503, refused
        assert json.loads(refused["body"])["state"] == "inconsistent"
    finally:
        execute(engine, f"UPDATE alembic_version SET version_num = '{NEW_REVISION}'")
        engine.dispose()


def test_admin_cli_fixes_history_and_migrates_with_confirmation(
        local: LocalDeploy, first: subprocess.CompletedProcess[str]) -> None:
    # GIVEN tables at the repository's head whose migration history was lost, while the
    # deployed function knows one more revision
    engine = local.engine()
    try:
        execute(engine, "DROP TABLE alembic_version", "ALTER TABLE users DROP COLUMN timezone")
    finally:
        engine.dispose()
    status = local.admin("--stack-name", STACK, "status")
    assert "Migration state: tables_without_migration_history" in status.stdout
    # the dry run says what it would stamp and apply, changing nothing
    plan = local.admin("--function-name", FUNCTION, "--json", "run-migrations", "--dry-run",
                       "--fix-history")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    planned = json.loads(plan.stdout)
    assert planned["baseline"]["matched"] == HEAD
    assert planned["pending"] == [NEW_REVISION]
    # a change needs --confirm: without it, exit 2 and nothing done
    unconfirmed = local.admin("--function-name", FUNCTION, "run-migrations", "--fix-history")
    assert unconfirmed.returncode == 2, unconfirmed.stdout + unconfirmed.stderr
    assert "--confirm" in unconfirmed.stderr
    engine = local.engine()
    try:
        assert "alembic_version:r" not in relations(engine)
        fixed = local.admin("--function-name", FUNCTION, "--json", "--confirm",
                            "run-migrations", "--fix-history")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert [step["revision"] for step in json.loads(fixed.stdout)["applied"]] == [
            NEW_REVISION]
        assert version_rows(engine) == [NEW_REVISION]
    finally:
        engine.dispose()
    local.assert_rows_kept()


def test_after_the_endpoint_stopped_a_deploy_brings_it_back(
        local: LocalDeploy, first: subprocess.CompletedProcess[str],
        with_new_migration: Path) -> None:
    # GIVEN the local AWS endpoint gone (a reboot): moto's records with it
    assert local_aws.stop(local_aws.LocalAwsFiles.under(local.local_dir)) is True
    down = local.admin("--stack-name", STACK, "status")
    assert down.returncode != 0
    # WHEN deploying the same checkout again
    again = local.run(cdk_out=with_new_migration)
    # THEN nothing is deployed, the endpoint is back with a new secret, and the CLI works
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[0] == f"{STACK} (local): no changes"
    status = local.admin("--stack-name", STACK, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Migration state: up_to_date" in status.stdout


def test_destroy_then_deploy_starts_from_an_empty_database(
        local: LocalDeploy, first: subprocess.CompletedProcess[str]) -> None:
    destroyed = local.run("destroy")
    assert destroyed.returncode == 0, destroyed.stderr
    assert "stopped the local AWS endpoint" in destroyed.stdout
    assert not (local.local_dir / "postgres").exists()
    assert not (local.local_dir / "deploy-state-dev.json").exists()
    assert not (local.local_dir / "aws").exists()
    again = local.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "State: empty" in again.stdout.splitlines()
    assert events(again)[-1] == "CREATE_COMPLETE"
    local.kept.clear()


# -- scenarios on their own database ---------------------------------------------------------
def test_tables_created_without_history_get_a_verified_baseline(
        first: subprocess.CompletedProcess[str]) -> None:
    with local_environment("deploy-local-baseline-") as local:
        # GIVEN tables at the first online revision created without Alembic's history (e.g.
        # create_all): its batched backfill, CHECK and concurrent index are still to run
        local.start_database()
        alembic_upgrade(local, ADD_EMAIL_DOMAIN)
        engine = local.engine()
        try:
            execute(engine, "DROP TABLE alembic_version")
        finally:
            engine.dispose()
        local.insert_rows()
        # WHEN deploying
        result = local.run()
        # THEN the history is verified against the scripts, stamped, and the rest applied
        assert result.returncode == 0, result.stdout + result.stderr
        assert events(result) == ["CREATE_IN_PROGRESS", "CREATE_COMPLETE", "CREATE_COMPLETE"]
        # (the answer's state is the one after the stamp: the revisions left to apply; a first
        # deploy knows no live release, so the column drop waits for the next one)
        left = ORDER.index(USERS_NAME_NULLABLE) - ORDER.index(ADD_EMAIL_DOMAIN)
        assert (f"Revision: {ADD_EMAIL_DOMAIN} → {USERS_NAME_NULLABLE} ({left} applied)"
                in result.stdout)
        log = local.function_log
        assert "Migration state: tables_without_migration_history" in log
        assert log.index("Verified baseline: ") < log.index(f"Running {left} pending migrations")
        assert "Backfill of users (email_domain = lower(split_part(email, '@', 2))) complete: " in (
            log)
        engine = local.engine()
        try:
            assert version_rows(engine) == [USERS_NAME_NULLABLE]
        finally:
            engine.dispose()
        local.assert_rows_kept()


def alembic_upgrade(local: LocalDeploy, revision: str, *, stage: str = "dev") -> None:
    url = local.engine(stage).url.render_as_string(hide_password=False)
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", revision], cwd=REPO_ROOT,
                   check=True, capture_output=True, timeout=120,
                   env={**os.environ, "DATABASE_URL": url})


# -- adopting it in an existing app (README "Add it to your app") --------------------------------
EXISTING_STACK = "DbMigrations-existing-Application"
FIRST_REVISION = "741c2c5d4584"
# The release this scenario deploys: the sample history up to its column drop, the contract
# revision last (a release may bring one only as its last revision).
RELEASE_HEAD = "6f1c2a9b7d3e"


def release_checkout(root: Path, head: str) -> Path:
    """A project copy whose history ends at `head`: later revisions are removed."""
    project = project_copy(root)
    end_history_at(project, head)
    return project


def test_an_existing_app_adopts_it_keeping_every_row(
        first: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    # GIVEN the existing-database stage (cdk.json `existing`) of a release ending at RELEASE_HEAD
    project = release_checkout(tmp_path, RELEASE_HEAD)
    outdir = tmp_path / "cdk.out"
    synthesize("existing", outdir=outdir, project_root=project)
    with local_environment("deploy-local-existing-") as local:
        # WHEN its first deploy runs against an empty local database
        result = local.run(stage="existing", cdk_out=outdir)
        # THEN the database is first made an existing app's: tables, rows, no history
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == (
            f"app_existing (local): empty, so made what an existing app has: the tables of "
            f"{FIRST_REVISION} without migration history (as db.create_all() leaves them), "
            "3 projects, 6 tasks, 3 users")
        assert events(result) == ["CREATE_IN_PROGRESS", "CREATE_COMPLETE", "CREATE_COMPLETE"]
        # AND the deploy verified the baseline, snapshotted the database and migrated on
        assert "Engine: Migration state: tables_without_migration_history" in lines
        assert f"Engine: Verified baseline: schema matches revision {FIRST_REVISION}" in lines
        revision = next(line for line in lines if line.startswith("Revision: "))
        assert revision.startswith(f"Revision: {FIRST_REVISION} → ")
        reached = revision.split(" → ")[1].split()[0]
        deferred = next((line.split(": ", 1)[1] for line in lines
                         if line.startswith("Deferred: ")), "")
        # the contract revision is applied, or left to the next release: the answer says which
        assert (reached, deferred) in ((RELEASE_HEAD, ""), (USERS_NAME_NULLABLE, RELEASE_HEAD))
        assert any(line.startswith("Snapshot: premigrate-") for line in lines)
        # AND every seeded row is still there, and it says so
        assert "Rows kept: 12 of 12 (projects 3 of 3, tasks 6 of 6, users 3 of 3)" in lines
        engine = local.engine("existing")
        try:
            assert version_rows(engine) == [reached]
        finally:
            engine.dispose()
        # the secret and the RDS record are the stage's existingDatabase's
        assert local.aws("secretsmanager").describe_secret(
            SecretId="orders-db/master")["Name"] == "orders-db/master"
        assert local.aws("rds").describe_db_instances(
            DBInstanceIdentifier="orders-db")["DBInstances"]
        # AND the team's own function, connected check-only, serves after the deploy
        answered = next(line for line in lines if line.startswith(
            f"{EXISTING_STACK}-TeamFunction answered "))
        status, body = answered.split(" answered ", 1)[1].split(": ", 1)
        assert status == "200", answered
        report = json.loads(body)
        assert report["users"] == 3
        assert [project["tasks"] for project in report["projects"]] == [2, 2, 2]
        assert f"{EXISTING_STACK}.TeamFunctionName = {EXISTING_STACK}-TeamFunction" in lines
        # WHEN deploying again: nothing to do, nothing seeded, the function still serves
        again = local.run(stage="existing", cdk_out=outdir)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.splitlines()[0] == f"{EXISTING_STACK} (local): no changes"
        assert f"{EXISTING_STACK}-TeamFunction answered 200: " in again.stdout
