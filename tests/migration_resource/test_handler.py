"""The migration Lambda as CloudFormation and operators call it.

Real parts: PostgreSQL (the test database), the moto server for RDS, CloudFormation, Events,
Lambda (permissions only) and Secrets Manager, and an HTTPS recorder as the ResponseURL.
The Lambda context is a small object: the Lambda runtime cannot run here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from localdev.aws_records import ensure_database_record, ensure_function_record
from migration_resource import handler as handler_module
from migration_resource.handler import handler
from tests.alembic.support import (
    ADD_DISPLAY_NAME,
    ALL_REVISIONS,
    CHECK_TASK_STATUS,
    DROP_USERS_NAME,
    HEAD,
    ORDER,
    USERS_NAME_NULLABLE,
    upgrade,
)
from tests.migration_resource.support import SAMPLE_SCRIPTS, execute, relations, version_rows

FUNCTION = "migration-function"
AFTER_ADD_DISPLAY_NAME = len(ORDER) - ORDER.index(ADD_DISPLAY_NAME) - 1
TEMPLATE = json.dumps({
    "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
    "Outputs": {"MigrationFunctionName": {"Value": FUNCTION}},
})


@dataclass
class LambdaContext:
    remaining_ms: int = 900_000
    function_name: str = FUNCTION
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Deploy:
    """Plays CloudFormation: sends events, reads the answers, fires crhelper's polls."""

    aws: Any
    recorder: Any
    stack_id: str
    properties: dict[str, str]

    def event(self, request_type: str, **changes: Any) -> dict[str, Any]:
        properties = {**self.properties, **changes.pop("properties", {})}
        event: dict[str, Any] = {
            "RequestType": request_type,
            "ServiceToken": f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}",
            "ResponseURL": self.recorder.url(f"/responses/{uuid.uuid4().hex}"),
            "StackId": self.stack_id,
            "RequestId": uuid.uuid4().hex,
            "LogicalResourceId": "DatabaseMigration",
            "ResourceType": "Custom::DatabaseMigration",
            "ResourceProperties": properties,
        }
        if request_type != "Create":
            event["PhysicalResourceId"] = "app-DatabaseMigration"
            event["OldResourceProperties"] = dict(self.properties)
        event.update(changes)
        return event

    def send(self, event: dict[str, Any], context: LambdaContext | None = None) -> dict[str, Any]:
        """Invoke, then fire scheduled polls (as EventBridge would) until answered."""
        before = len(self.recorder.requests)
        handler(event, context or LambdaContext())
        for _ in range(5):
            if len(self.recorder.requests) > before:
                break
            for poll in self.scheduled_polls():
                handler(poll, context or LambdaContext())
        assert len(self.recorder.requests) == before + 1, "exactly one answer per request"
        return dict(self.recorder.requests[-1].body)

    def scheduled_polls(self) -> list[dict[str, Any]]:
        events = self.aws.client("events")
        polls = []
        for rule in events.list_rules()["Rules"]:
            for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]:
                polls.append(json.loads(target["Input"]))
        return polls


@pytest.fixture
def deploy(aws: Any, response_recorder: Any, database_url: str,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Deploy]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
    monkeypatch.setenv("CFN_RESPONSE_CA_BUNDLE", str(response_recorder.ca_file))
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "db-migrations")
    monkeypatch.setenv("STAGE", "development")
    ensure_database_record(aws.client, instance="appdb")
    ensure_function_record(aws.client, FUNCTION)
    stack_id = aws.client("cloudformation").create_stack(
        StackName="app", TemplateBody=TEMPLATE)["StackId"]
    handler_module._resource = None  # a new container per test
    yield Deploy(aws=aws, recorder=response_recorder, stack_id=stack_id, properties={
        "TargetRevision": HEAD,
        "SnapshotBeforeMigrate": "true",
        "AllowDestructive": "false",
        "Stage": "development",
        "DbInstanceIdentifier": "appdb",
    })
    handler_module._resource = None


def snapshots(deploy: Deploy) -> list[str]:
    """Manual snapshots (moto also makes an automated one when the instance is created)."""
    found = deploy.aws.client("rds").describe_db_snapshots(
        DBInstanceIdentifier="appdb", SnapshotType="manual")
    return [s["DBSnapshotIdentifier"] for s in found["DBSnapshots"]]


def test_create_on_an_empty_database_migrates_without_a_snapshot(deploy: Deploy, db) -> None:
    answer = deploy.send(deploy.event("Create"))
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["PhysicalResourceId"] == "app-DatabaseMigration"
    data = dict(answer["Data"])
    # on an empty database every revision only adds: nothing running can need what one drops
    expand = data.pop("Expand").split(",")
    assert len(expand) == ALL_REVISIONS and expand[-1] == HEAD
    assert (data.pop("Contract"), data.pop("Deferred")) == ("", "")
    assert data == {"State": "empty", "FromRevision": "base", "ToRevision": HEAD,
                    "Applied": str(ALL_REVISIONS), "SnapshotId": ""}
    assert version_rows(db) == [HEAD]
    assert snapshots(deploy) == []  # nothing to lose, nothing to snapshot


def test_update_with_pending_snapshots_first_then_migrates(
    deploy: Deploy, db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    execute(db, "INSERT INTO users (email, name) VALUES ('a@example.com', 'Ada')")
    answer = deploy.send(deploy.event("Update"))
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["PhysicalResourceId"] == "app-DatabaseMigration"  # stable across updates
    data = answer["Data"]
    assert data["State"] == "pending_migrations" and data["ToRevision"] == HEAD
    assert data["FromRevision"] == ADD_DISPLAY_NAME
    assert data["Applied"] == str(AFTER_ADD_DISPLAY_NAME)
    assert data["SnapshotId"].startswith("premigrate-app-")
    assert snapshots(deploy) == [data["SnapshotId"]]
    # the snapshot was available before the first migration statement ran
    messages = caplog.messages
    available = messages.index(f"Snapshot {data['SnapshotId']} is available")
    running = messages.index(f"Running {AFTER_ADD_DISPLAY_NAME} pending migrations...")
    assert available < running
    with db.connect() as conn:
        recorded = conn.exec_driver_sql(
            "SELECT DISTINCT snapshot_id, actor FROM migration_audit WHERE action = 'upgrade' "
            f"AND revision = '{HEAD}'").one()
    assert tuple(recorded) == (data["SnapshotId"], "deploy")


def test_development_may_turn_snapshots_off(deploy: Deploy, db) -> None:
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    answer = deploy.send(deploy.event("Update", properties={"SnapshotBeforeMigrate": "false"}))
    assert answer["Status"] == "SUCCESS"
    assert answer["Data"]["Applied"] == str(AFTER_ADD_DISPLAY_NAME)
    assert answer["Data"]["SnapshotId"] == "" and snapshots(deploy) == []


def test_an_aurora_cluster_is_snapshotted_as_a_cluster(deploy: Deploy, db) -> None:
    rds = deploy.aws.client("rds")
    rds.create_db_cluster(DBClusterIdentifier="appcluster", Engine="aurora-postgresql",
                          MasterUsername="app", MasterUserPassword="not-the-real-one")
    deploy.properties = {k: v for k, v in deploy.properties.items()
                         if k != "DbInstanceIdentifier"}
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME,
                                                   "DbClusterIdentifier": "appcluster"}))
    answer = deploy.send(deploy.event("Update", properties={"DbClusterIdentifier": "appcluster"}))
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    found = rds.describe_db_cluster_snapshots(DBClusterIdentifier="appcluster",
                                              SnapshotType="manual")["DBClusterSnapshots"]
    assert [s["DBClusterSnapshotIdentifier"] for s in found] == [answer["Data"]["SnapshotId"]]


def test_no_change_update_takes_no_snapshot_and_asks_aws_nothing(deploy: Deploy, db) -> None:
    deploy.send(deploy.event("Create"))
    assert handler_module._resource is not None
    services = handler_module._resource.services
    asked: list[str] = []
    real_cloudformation, real_rds = services.cloudformation, services.rds
    services.cloudformation = lambda: asked.append("cloudformation") or real_cloudformation()
    services.rds = lambda: asked.append("rds") or real_rds()
    answer = deploy.send(deploy.event("Update", properties={"MigrationsHash": "changed"}))
    assert answer["Status"] == "SUCCESS"
    assert answer["Data"]["State"] == "up_to_date" and answer["Data"]["Applied"] == "0"
    assert snapshots(deploy) == []
    # nothing to change: the stack's status would not change the answer, so it is not read
    assert asked == []


def test_inconsistent_fails_with_a_short_reason_and_changes_nothing(deploy: Deploy, db) -> None:
    deploy.send(deploy.event("Create", properties={"TargetRevision": CHECK_TASK_STATUS}))
    execute(db, "UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    before = relations(db)
    answer = deploy.send(deploy.event("Update"))
    assert answer["Status"] == "FAILED"
    reason = answer["Reason"]
    assert len(reason) <= 240
    assert reason == (
        "inconsistent: alembic_version holds 'f00dfeedbeef': no script defines it, no audit "
        "row traces its ancestry; nothing was changed. Restore its revision file, or stamp the "
        "schema's revision with --baseline REV. See docs/RUNBOOK.md#inconsistent"
    )
    assert relations(db) == before and version_rows(db) == ["f00dfeedbeef"]
    assert snapshots(deploy) == []


def edit_a_checksum(db: sa.Engine) -> None:
    execute(db, f"UPDATE migration_audit SET checksum = repeat('0', 64) "
                f"WHERE revision = '{ADD_DISPLAY_NAME}'")


def keep_an_ancestor_row(db: sa.Engine) -> None:
    execute(db, f"INSERT INTO alembic_version VALUES ('{ADD_DISPLAY_NAME}')")


def fail_a_non_transactional_revision(db: sa.Engine) -> None:
    execute(db, "INSERT INTO migration_audit (request_id, actor, action, revision, direction, "
                f"transactional, outcome, detail) VALUES ('r', 'admin', 'upgrade', '{HEAD}', "
                "'up', false, 'failed', 'CREATE INDEX CONCURRENTLY failed')")


@pytest.mark.parametrize(("break_it", "detail", "next_step"), [
    (edit_a_checksum, f"checksum mismatch: revision {ADD_DISPLAY_NAME} was edited",
     "Revert the edit, or accept it with `remote_admin.py --confirm repair "
     "--realign-checksums`."),
    (keep_an_ancestor_row, f"alembic_version holds {ADD_DISPLAY_NAME!r} together with its "
     "descendant", "Stamp the revision the schema has with --baseline REV."),
    (fail_a_non_transactional_revision, f"revision {HEAD} failed inside a non-transactional",
     "Resolve it with `remote_admin.py --confirm repair --resolve rolled-back|applied "
     f"--revision {HEAD}`."),
])
def test_each_inconsistent_cause_fails_with_its_own_next_step(
    deploy: Deploy, db: sa.Engine, break_it: Callable[[sa.Engine], None], detail: str,
    next_step: str,
) -> None:
    # GIVEN a database made inconsistent in one way
    deploy.send(deploy.event("Create", properties={"TargetRevision": CHECK_TASK_STATUS}))
    break_it(db)
    before = relations(db), version_rows(db)
    # WHEN deploying
    answer = deploy.send(deploy.event("Update"))
    # THEN the reason is the engine's: state first, the cause, its next step, the anchor last
    assert answer["Status"] == "FAILED"
    reason = answer["Reason"]
    assert len(reason) <= 240
    assert reason.startswith("inconsistent: ")
    assert detail[:60] in reason
    assert reason.endswith(f"; nothing was changed. {next_step} See docs/RUNBOOK.md#inconsistent")
    assert (relations(db), version_rows(db)) == before and snapshots(deploy) == []


def audit_rows(db: sa.Engine) -> list[tuple[object, ...]]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT action, revision, outcome, actor FROM migration_audit ORDER BY id")]


def test_a_production_update_defers_the_contract_revision_it_brings(
    deploy: Deploy, db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN production data at the revision before the column drop, that release live
    deploy.properties["Stage"] = "production"
    deploy.send(deploy.event("Create", properties={"TargetRevision": USERS_NAME_NULLABLE}))
    execute(db, "INSERT INTO users (email, name) VALUES ('a@example.com', 'Ada')")
    before = relations(db)
    caplog.set_level(logging.INFO)
    # WHEN the next release brings the revision dropping users.name (its code no longer
    # reads it, but the code it replaces does)
    answer = deploy.send(deploy.event("Update", properties={"TargetRevision": DROP_USERS_NAME},
                                      OldResourceProperties=live(USERS_NAME_NULLABLE)))
    # THEN the deploy succeeds and says the drop waits for the next release: nothing changed,
    # no snapshot taken (nothing ran), no AllowDestructive needed
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    data = answer["Data"]
    assert (data["Contract"], data["Deferred"], data["Applied"]) == (
        DROP_USERS_NAME, DROP_USERS_NAME, "0")
    assert data["ToRevision"] == USERS_NAME_NULLABLE and data["SnapshotId"] == ""
    assert snapshots(deploy) == []
    assert f"Deferred to the next release: {DROP_USERS_NAME}" in caplog.messages
    assert relations(db) == before and version_rows(db) == [USERS_NAME_NULLABLE]
    assert audit_rows(db)[-1] == ("defer", DROP_USERS_NAME, "deferred", "deploy")
    with db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM users WHERE name = 'Ada'").scalar() == 1


PURGE = "b7c1d2e3f4a5"


def with_a_revision_after_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, revision: str, statement: str = "", *,
    upgrade: str = "", downgrade: str = "pass",
) -> None:
    """The sample's history and a revision after its head that executes `statement` (or
    runs `upgrade`, one line of code), in the functions' folder."""
    scripts = tmp_path / "scripts"
    shutil.copytree(SAMPLE_SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / f"{revision}_after_the_head.py").write_text(
        '"""after the head"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f'revision = "{revision}"\ndown_revision = "{HEAD}"\nbranch_labels = None\n'
        'depends_on = None\n\n\ndef upgrade() -> None:\n'
        f'    {upgrade or f"op.execute({statement!r})"}\n\n\n'
        f'def downgrade() -> None:\n    {downgrade}\n')
    monkeypatch.setenv("ALEMBIC_SCRIPT_LOCATION", str(scripts))
    handler_module._resource = None


def with_a_purge_after_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample's history and a revision after its head that deletes test users' rows."""
    with_a_revision_after_head(tmp_path, monkeypatch, PURGE,
                               "DELETE FROM users WHERE email LIKE '%@test.example'")


def users(db: sa.Engine) -> int:
    with db.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM users").scalar_one())


@pytest.mark.parametrize("event_stage", [None, "development"])
def test_production_rules_apply_when_either_the_function_or_the_event_says_production(
    deploy: Deploy, db: sa.Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    event_stage: str | None,
) -> None:
    # GIVEN a function configured for production, data at the sample's head, a DELETE next
    with_a_purge_after_head(tmp_path, monkeypatch)
    assert deploy.send(deploy.event("Create"))["Status"] == "SUCCESS"
    execute(db, "INSERT INTO users (email, display_name) VALUES ('a@test.example', 'A')")
    monkeypatch.setenv("STAGE", "production")
    handler_module._resource = None
    # WHEN a deploy's properties lack Stage, or say development
    if event_stage is None:
        del deploy.properties["Stage"]
    else:
        deploy.properties["Stage"] = event_stage
    answer = deploy.send(deploy.event("Update", properties={"TargetRevision": PURGE},
                                      OldResourceProperties=live(PURGE)))
    # THEN production rules hold: the DELETE is refused, the row stays
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(f"pending_migrations: {PURGE}: delete_rows blocked")
    assert version_rows(db) == [HEAD] and users(db) == 1


def test_the_next_release_applies_the_deferred_contract_revision_first_after_a_snapshot(
    deploy: Deploy, db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    deploy.properties["Stage"] = "production"
    deploy.send(deploy.event("Create", properties={"TargetRevision": USERS_NAME_NULLABLE}))
    deploy.send(deploy.event("Update", properties={"TargetRevision": DROP_USERS_NAME},
                             OldResourceProperties=live(USERS_NAME_NULLABLE)))
    caplog.set_level(logging.INFO)
    # WHEN the release after it deploys (the live release now contains the drop)
    answer = deploy.send(deploy.event("Update", OldResourceProperties=live(DROP_USERS_NAME)))
    # THEN the drop runs, after a snapshot, without AllowDestructive (the deferral was the
    # safety)
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    snapshot_id = answer["Data"]["SnapshotId"]
    assert snapshots(deploy) == [snapshot_id]
    assert answer["Data"]["Applied"] == "1"
    assert answer["Data"]["Contract"] == DROP_USERS_NAME and answer["Data"]["Deferred"] == ""
    messages = caplog.messages
    assert messages.index(f"Snapshot {snapshot_id} is available") < messages.index(
        "Running 1 pending migrations...")
    assert version_rows(db) == [HEAD]


def test_after_a_rollback_the_contract_revision_stays_deferred(
    deploy: Deploy, db: sa.Engine
) -> None:
    # GIVEN the release bringing the drop deployed (drop deferred), then rolled back
    deploy.properties["TargetRevision"] = DROP_USERS_NAME
    deploy.send(deploy.event("Create", properties={"TargetRevision": USERS_NAME_NULLABLE}))
    deploy.send(deploy.event("Update", OldResourceProperties=live(USERS_NAME_NULLABLE)))
    # (the rollback's Update brings the old properties back: the database is at their
    # target, so it is answered from one query)
    rolled_back = deploy.send(deploy.event(
        "Update", properties={"TargetRevision": USERS_NAME_NULLABLE},
        OldResourceProperties=live(DROP_USERS_NAME)))
    assert rolled_back["Status"] == "SUCCESS" and rolled_back["Data"]["Applied"] == "0"
    # WHEN that release is deployed again: the live release is still the one before it
    answer = deploy.send(deploy.event("Update", OldResourceProperties=live(USERS_NAME_NULLABLE)))
    # THEN the drop is still deferred
    assert answer["Status"] == "SUCCESS" and answer["Data"]["Deferred"] == DROP_USERS_NAME
    assert version_rows(db) == [USERS_NAME_NULLABLE]


def test_a_revision_after_a_deferred_contract_revision_is_refused_before_a_snapshot(
    deploy: Deploy, db: sa.Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN a release whose drop is followed by another revision
    with_a_revision_after_head(
        tmp_path, monkeypatch, "a1f7e0c2b9d4",
        upgrade='op.add_column("users", sa.Column("nickname", sa.Text(), nullable=True))',
        downgrade='op.drop_column("users", "nickname")')
    deploy.send(deploy.event("Create", properties={"TargetRevision": USERS_NAME_NULLABLE}))
    # WHEN it deploys
    answer = deploy.send(deploy.event("Update", properties={"TargetRevision": "a1f7e0c2b9d4"},
                                      OldResourceProperties=live(USERS_NAME_NULLABLE)))
    # THEN it is refused with what to do, before any snapshot, nothing changed
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(
        f"pending_migrations: revision a1f7e0c2b9d4 comes after contract revision "
        f"{DROP_USERS_NAME}")
    assert f"Make {DROP_USERS_NAME} the last revision of this release" in answer["Reason"]
    assert snapshots(deploy) == [] and version_rows(db) == [USERS_NAME_NULLABLE]


def test_the_two_deploy_rollout_approves_nothing_by_itself(
    deploy: Deploy, db: sa.Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN production data at the sample's head, and a next release whose revision deletes
    # rows (the README's rollout: first migrateOnDeploy false to see the plan, then true)
    with_a_purge_after_head(tmp_path, monkeypatch)
    deploy.properties["Stage"] = "production"
    assert deploy.send(deploy.event("Create"))["Status"] == "SUCCESS"
    execute(db, "INSERT INTO users (email, display_name) VALUES ('a@test.example', 'A')")
    # WHEN the first deploy only reports, and the second migrates, its release now live
    report = deploy.send(deploy.event(
        "Update", properties={"TargetRevision": PURGE, "MigrateOnDeploy": "false"},
        OldResourceProperties=live(HEAD)))
    assert report["Status"] == "SUCCESS" and report["Data"]["Applied"] == "0"
    answer = deploy.send(deploy.event(
        "Update", properties={"TargetRevision": PURGE},
        OldResourceProperties={**live(PURGE), "MigrateOnDeploy": "false"}))
    # THEN the DELETE is refused: the report-only deploy approved nothing
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(f"pending_migrations: {PURGE}: delete_rows blocked")
    assert "`# migration-approve: delete_rows users -- <why>`" in answer["Reason"]
    assert version_rows(db) == [HEAD] and snapshots(deploy) == [] and users(db) == 1
    # AND the revision's approval line, naming the rows and why, lets the next deploy run it
    purge = (Path(os.environ["ALEMBIC_SCRIPT_LOCATION"]) / "versions"
             / f"{PURGE}_after_the_head.py")
    approval = "    # migration-approve: delete users -- test accounts\n"
    purge.write_text(purge.read_text().replace("    op.execute(", approval + "    op.execute("))
    handler_module._resource = None
    approved = deploy.send(deploy.event(
        "Update", properties={"TargetRevision": PURGE}, OldResourceProperties=live(PURGE)))
    assert approved["Status"] == "SUCCESS", approved["Reason"]
    assert version_rows(db) == [PURGE] and users(db) == 0


def live(target: str) -> dict[str, str]:
    """OldResourceProperties of the release being replaced: its TargetRevision is live."""
    return {"TargetRevision": target, "Stage": "production"}


def test_migrations_on_deploy_disabled_report_and_change_nothing(
    deploy: Deploy, db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a database with migrations pending
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    before = relations(db)
    caplog.set_level(logging.INFO)
    # WHEN an Update arrives with migrateOnDeploy false
    answer = deploy.send(deploy.event("Update", properties={"MigrateOnDeploy": "false"}))
    # THEN SUCCESS with the state as it is: nothing applied, no snapshot, the line logged
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["Data"] == {"State": "pending_migrations", "FromRevision": ADD_DISPLAY_NAME,
                              "ToRevision": ADD_DISPLAY_NAME, "Applied": "0", "SnapshotId": ""}
    assert ("Migrations on deploy are disabled (migrateOnDeploy is false): the database is "
            f"pending_migrations at {ADD_DISPLAY_NAME}; nothing was changed") in caplog.messages
    assert relations(db) == before and version_rows(db) == [ADD_DISPLAY_NAME]
    assert snapshots(deploy) == [] and deploy.scheduled_polls() == []
    # AND flipping it back runs the migrations, snapshot first, as usual
    answer = deploy.send(deploy.event("Update", properties={"MigrateOnDeploy": "true"}))
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["Data"]["Applied"] == str(AFTER_ADD_DISPLAY_NAME)
    assert answer["Data"]["ToRevision"] == HEAD
    assert snapshots(deploy) == [answer["Data"]["SnapshotId"]]
    assert version_rows(db) == [HEAD]


def test_migrations_on_deploy_disabled_on_create_names_base(
    deploy: Deploy, db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = deploy.send(deploy.event("Create", properties={"MigrateOnDeploy": "false"}))
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["Data"] == {"State": "empty", "FromRevision": "base", "ToRevision": "base",
                              "Applied": "0", "SnapshotId": ""}
    assert ("Migrations on deploy are disabled (migrateOnDeploy is false): the database is "
            "empty at base; nothing was changed") in caplog.messages
    assert relations(db) == []  # not even the audit trail


def test_migrations_on_deploy_disabled_never_block_even_unreachable(
    deploy: Deploy, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a database nobody can reach
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:s3cret-pw@127.0.0.1:9/none")
    monkeypatch.setenv("DATABASE_CONNECT_ATTEMPTS", "1")
    # WHEN deploying with migrateOnDeploy false
    answer = deploy.send(deploy.event("Update", properties={"MigrateOnDeploy": "false"}))
    # THEN the deploy goes on: SUCCESS, State unknown, and a warning naming the error
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["Data"] == {"State": "unknown", "FromRevision": "", "ToRevision": "",
                              "Applied": "0", "SnapshotId": ""}
    (warning,) = [r.getMessage() for r in caplog.records
                  if r.levelno == logging.WARNING and "migrateOnDeploy is false" in r.getMessage()]
    assert warning.startswith("Migrations on deploy are disabled (migrateOnDeploy is false): the "
                              "database could not be classified (DatabaseUnavailable: Cannot "
                              "connect to the database")
    assert "s3cret-pw" not in caplog.text
    assert snapshots(deploy) == []


def test_older_templates_without_the_property_migrate(deploy: Deploy, db: sa.Engine) -> None:
    assert "MigrateOnDeploy" not in deploy.properties
    answer = deploy.send(deploy.event("Create"))
    assert answer["Status"] == "SUCCESS" and answer["Data"]["Applied"] == str(ALL_REVISIONS)
    assert version_rows(db) == [HEAD]


def test_a_malformed_migrate_on_deploy_is_named(deploy: Deploy, db: sa.Engine) -> None:
    answer = deploy.send(deploy.event("Create", properties={"MigrateOnDeploy": "no"}))
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("MigrateOnDeploy must be true or false")
    assert relations(db) == []


@dataclass
class StackStatusOnly:
    """Stands in for CloudFormation's DescribeStacks during a rollback: moto's stacks
    cannot be put in UPDATE_ROLLBACK_IN_PROGRESS, so this is the one part not run for real."""

    status: str

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        return {"Stacks": [{"StackId": StackName, "StackStatus": self.status}]}


def test_rollback_update_succeeds_without_touching_the_database(
    deploy: Deploy, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    assert handler_module._resource is not None
    handler_module._resource.services.cloudformation = lambda: StackStatusOnly(
        "UPDATE_ROLLBACK_IN_PROGRESS")
    # the database is unreachable: a rollback must not even try to connect
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none")
    answer = deploy.send(deploy.event("Update", properties={"TargetRevision": HEAD}))
    assert answer["Status"] == "SUCCESS" and answer["Data"]["State"] == "rollback"
    assert version_rows(db) == [ADD_DISPLAY_NAME]


def test_redeploying_the_previous_release_succeeds_without_a_change(
    deploy: Deploy, db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN the newer release migrated to head
    deploy.send(deploy.event("Create"))
    # WHEN the previous release (its scripts lack the head revision, its template names the
    # revision before) is deployed again: an ordinary Update, not a rollback
    previous = tmp_path / "previous"
    shutil.copytree(SAMPLE_SCRIPTS, previous, ignore=shutil.ignore_patterns("__pycache__"))
    for path in (previous / "versions").glob(f"*_{HEAD}_*.py"):
        path.unlink()
    monkeypatch.setenv("ALEMBIC_SCRIPT_LOCATION", str(previous))
    handler_module._resource = None  # the previous release's code: a new container
    answer = deploy.send(deploy.event("Update", properties={"TargetRevision": CHECK_TASK_STATUS}))
    # THEN it succeeds, saying the database is ahead, and nothing changed
    assert answer["Status"] == "SUCCESS", answer.get("Reason")
    assert answer["Data"]["State"] == "ahead" and answer["Data"]["Applied"] == "0"
    assert version_rows(db) == [HEAD]
    assert snapshots(deploy) == []


def test_a_rollback_with_properties_this_code_rejects_still_succeeds(
    deploy: Deploy, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    assert handler_module._resource is not None
    handler_module._resource.services.cloudformation = lambda: StackStatusOnly(
        "UPDATE_ROLLBACK_IN_PROGRESS")
    # the old release's properties, in a form this code refuses to parse
    answer = deploy.send(deploy.event(
        "Update", PhysicalResourceId="id-from-the-first-create",
        properties={"TargetRevision": HEAD, "SnapshotBeforeMigrate": "sometimes",
                    "Stage": "staging"}))
    assert answer["Status"] == "SUCCESS" and answer["Data"]["State"] == "rollback"
    # the event's own id: a different one would make CloudFormation replace the resource
    assert answer["PhysicalResourceId"] == "id-from-the-first-create"
    assert version_rows(db) == [ADD_DISPLAY_NAME]


def test_a_normal_update_reads_the_real_stack_status(
    deploy: Deploy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    answer = deploy.send(deploy.event("Update"))
    assert answer["Status"] == "SUCCESS" and answer["Data"]["State"] == "pending_migrations"
    assert "Stack status: CREATE_COMPLETE" in caplog.messages


def test_delete_keeps_everything(deploy: Deploy, db) -> None:
    deploy.send(deploy.event("Create"))
    before = relations(db)
    answer = deploy.send(deploy.event("Delete"))
    assert answer["Status"] == "SUCCESS"
    assert answer["PhysicalResourceId"] == "app-DatabaseMigration"
    assert relations(db) == before and version_rows(db) == [HEAD]


def test_snapshot_failure_stops_the_migration(deploy: Deploy, db) -> None:
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    answer = deploy.send(deploy.event("Update", properties={"DbInstanceIdentifier": "no-such-db"}))
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(
        "pending_migrations: Cannot read the status of DB instance 'no-such-db'")
    assert answer["Reason"].endswith("Check the DbInstanceIdentifier property of the custom "
                                     "resource")
    assert version_rows(db) == [ADD_DISPLAY_NAME]


def test_not_enough_time_left_answers_failed_and_changes_nothing(deploy: Deploy, db) -> None:
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    short = LambdaContext(remaining_ms=60_000)  # MIGRATION_TIMEOUT is 300 s
    answer = deploy.send(deploy.event("Update"), short)
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("timeout: this Lambda run has 60 s")
    assert "Raise the Lambda timeout" in answer["Reason"]
    assert version_rows(db) == [ADD_DISPLAY_NAME]


def test_work_that_does_not_fit_one_run_continues_in_crhelpers_polls(
    deploy: Deploy, db: sa.Engine
) -> None:
    # GIVEN a first run with too little time left to start migrating after the snapshot
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    event = deploy.event("Update")
    handler(event, LambdaContext(remaining_ms=60_000))
    # THEN nothing is answered yet, nothing migrated, and a poll is scheduled
    assert version_rows(db) == [ADD_DISPLAY_NAME]
    polls = deploy.scheduled_polls()
    assert len(polls) == 1 and polls[0]["CrHelperPoll"] is True
    # WHEN the scheduled poll runs with a whole Lambda run
    before = len(deploy.recorder.requests)
    handler(polls[0], LambdaContext())
    # THEN it migrates, answers once, and removes its schedule
    assert len(deploy.recorder.requests) == before + 1
    answer = deploy.recorder.requests[-1].body
    assert answer["Status"] == "SUCCESS" and answer["Data"]["ToRevision"] == HEAD
    assert answer["Data"]["SnapshotId"].startswith("premigrate-")
    assert version_rows(db) == [HEAD]
    assert deploy.scheduled_polls() == []


def test_the_first_runs_plan_is_what_its_polls_carry_out(
    deploy: Deploy, db: sa.Engine
) -> None:
    # GIVEN a first run that plans, starts the snapshot, and has no time left to migrate
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    handler(deploy.event("Update"), LambdaContext(remaining_ms=60_000))
    (poll,) = deploy.scheduled_polls()
    # THEN the poll carries the plan: the decisions are made once, in the first run
    plan = json.loads(poll["CrHelperData"]["DeployPlan"])
    assert plan["action"] == "migrate" and plan["snapshot"] is True
    assert plan["state"] == "pending_migrations" and plan["to_revision"] == HEAD
    assert plan["pending"][-1] == HEAD and ADD_DISPLAY_NAME not in plan["pending"]
    assert poll["CrHelperData"]["SnapshotId"].startswith("premigrate-")


def test_a_database_planned_empty_that_has_data_by_the_poll_is_refused(
    deploy: Deploy, db: sa.Engine
) -> None:
    # GIVEN a Create planned on an empty database (no snapshot needed), left to a poll
    handler(deploy.event("Create"), LambdaContext(remaining_ms=60_000))
    (poll,) = deploy.scheduled_polls()
    assert json.loads(poll["CrHelperData"]["DeployPlan"])["snapshot"] is False
    # WHEN someone migrates it part of the way before the poll runs
    with db.begin() as connection:
        upgrade(connection, ADD_DISPLAY_NAME)
    before = len(deploy.recorder.requests)
    handler(poll, LambdaContext())
    # THEN the poll refuses to migrate the data without its snapshot, and changes nothing
    answer = deploy.recorder.requests[before].body
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith(
        "pending_migrations: the database was empty when this deploy planned")
    assert "Deploy again" in answer["Reason"]
    assert version_rows(db) == [ADD_DISPLAY_NAME]
    assert snapshots(deploy) == [] and deploy.scheduled_polls() == []


def test_a_poll_whose_plan_cannot_be_read_fails_and_changes_nothing(
    deploy: Deploy, db: sa.Engine
) -> None:
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    handler(deploy.event("Update"), LambdaContext(remaining_ms=60_000))
    (poll,) = deploy.scheduled_polls()
    poll["CrHelperData"]["DeployPlan"] = "{not json"
    before = len(deploy.recorder.requests)
    handler(poll, LambdaContext())
    answer = deploy.recorder.requests[before].body
    assert answer["Status"] == "FAILED"
    assert "deploy plan this run carries cannot be read" in answer["Reason"]
    assert version_rows(db) == [ADD_DISPLAY_NAME]


@dataclass
class ResourceStatusOnly:
    """Stands in for CloudFormation's DescribeStacks/DescribeStackResource: moto cannot put
    a resource in UPDATE_FAILED (answered by crhelper's timer) or a stack in
    UPDATE_ROLLBACK_IN_PROGRESS on demand, so these calls are not run for real; everything
    else (the poll rule, the database) is."""

    status: str
    stack_status: str = "UPDATE_IN_PROGRESS"

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        return {"Stacks": [{"StackId": StackName, "StackStatus": self.stack_status}]}

    def describe_stack_resource(self, StackName: str, LogicalResourceId: str) -> dict[str, Any]:
        return {"StackResourceDetail": {"ResourceStatus": self.status}}


@pytest.mark.parametrize(("resource_status", "stack_status"), [
    ("UPDATE_FAILED", "UPDATE_IN_PROGRESS"),  # crhelper's timer answered
    ("UPDATE_IN_PROGRESS", "UPDATE_ROLLBACK_IN_PROGRESS"),  # the rollback's own request
])
def test_a_poll_whose_request_was_answered_already_stops_without_touching_anything(
    deploy: Deploy, db: sa.Engine, resource_status: str, stack_status: str
) -> None:
    # GIVEN a deploy waiting in crhelper's polls, whose request was then answered FAILED
    # (crhelper's timer, 0.5 s before the Lambda timed out)
    deploy.send(deploy.event("Create", properties={"TargetRevision": ADD_DISPLAY_NAME}))
    handler(deploy.event("Update"), LambdaContext(remaining_ms=60_000))
    polls = deploy.scheduled_polls()
    assert len(polls) == 1
    assert handler_module._resource is not None
    handler_module._resource.services.cloudformation = lambda: ResourceStatusOnly(
        resource_status, stack_status)
    # WHEN the rule fires a minute later
    before = len(deploy.recorder.requests)
    handler(polls[0], LambdaContext())
    # THEN no second answer, no migration, and the rule is gone
    assert len(deploy.recorder.requests) == before
    assert version_rows(db) == [ADD_DISPLAY_NAME]
    assert deploy.scheduled_polls() == []


def test_the_timer_and_the_main_thread_answer_a_request_once(deploy: Deploy, db) -> None:
    deploy.send(deploy.event("Create"))
    resource = handler_module._resource
    assert resource is not None
    before = len(deploy.recorder.requests)
    # a new request: the timer fires while the main thread answers it
    resource.RequestId = "request-2"
    resource._send("FAILED", "timeout: the migration Lambda ran out of time")
    resource._send("SUCCESS", "")
    # THEN CloudFormation hears one answer, the first
    assert len(deploy.recorder.requests) == before + 1
    assert deploy.recorder.requests[-1].body["Status"] == "FAILED"


def test_response_url_down_gives_up_after_bounded_attempts(
    deploy: Deploy, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("migration_resource.delivery.time.sleep", lambda seconds: None)
    event = deploy.event("Delete", ResponseURL="https://127.0.0.1:9/unreachable")
    handler(event, LambdaContext())  # returns: no endless retry loop
    assert any("Giving up sending the response" in m for m in caplog.messages)


@pytest.mark.parametrize(
    "event",
    [
        {"RequestType": "Create"},
        {"RequestType": "Explode", "ResponseURL": "x", "StackId": "s", "RequestId": "r",
         "LogicalResourceId": "l"},
        {"RequestType": "Create", "ResponseURL": 5, "StackId": "s", "RequestId": "r",
         "LogicalResourceId": "l"},
    ],
)
def test_malformed_cloudformation_events_are_logged_not_crashing(
    event: dict[str, Any], caplog: pytest.LogCaptureFixture, deploy: Deploy
) -> None:
    assert handler(event, LambdaContext()) is None
    assert any("Malformed CloudFormation event" in m for m in caplog.messages)


def test_malformed_properties_fail_with_the_property_named(deploy: Deploy, db) -> None:
    answer = deploy.send(deploy.event("Create", properties={"SnapshotBeforeMigrate": "maybe",
                                                            "TargetRevision": "x" * 5000}))
    assert answer["Status"] == "FAILED"
    assert "TargetRevision" in answer["Reason"] or "SnapshotBeforeMigrate" in answer["Reason"]
    assert relations(db) == []


def test_admin_operations_need_confirm_for_changes(deploy: Deploy, db) -> None:
    status = handler({"admin_operation": "status"}, LambdaContext())
    assert status is not None and status["ok"] is True and status["state"] == "empty"
    refused = handler({"admin_operation": "run_migrations", "parameters": {}}, LambdaContext())
    assert refused is not None and refused["error"] == "confirmation_required"
    assert relations(db) == []
    done = handler({"admin_operation": "run_migrations", "parameters": {}, "confirm": True},
                   LambdaContext())
    assert done is not None and done["ok"] is True and done["final"] == [HEAD]
    history = handler({"admin_operation": "history", "parameters": {"limit": 3}},
                      LambdaContext())
    assert history is not None and len(history["history"]) == 3  # type: ignore[arg-type]


def test_unknown_events_get_a_clear_answer(deploy: Deploy) -> None:
    answer = handler({"hello": "world"}, LambdaContext())
    assert answer is not None and answer["ok"] is False and answer["error"] == "bad_request"
    answer = handler({"admin_operation": "drop_database"}, LambdaContext())
    assert answer is not None and "Unknown admin_operation" in str(answer["message"])


def test_secrets_never_appear_in_logs(
    deploy: Deploy, aws: Any, monkeypatch: pytest.MonkeyPatch, *,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], database_url: str,
) -> None:
    password = "Sup3r-Secret-pa55"
    url = sa.make_url(database_url)
    arn = aws.client("secretsmanager").create_secret(Name="db", SecretString=json.dumps({
        "host": url.host, "port": url.port, "username": url.username, "password": password,
        "dbname": url.database, "engine": "postgres",
    }))["ARN"]
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
    caplog.set_level(logging.DEBUG)
    answer = deploy.send(deploy.event("Create"))
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    handler({"admin_operation": "status"}, LambdaContext())
    out = capsys.readouterr()
    assert password not in out.out and password not in out.err
    assert all(password not in record.getMessage() for record in caplog.records)
    assert password not in json.dumps(answer)


def test_row_values_of_a_server_error_stay_out_of_reasons_and_answers(
    deploy: Deploy, db: sa.Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN a customer's row, and a revision that inserts the same e-mail address again
    with_a_revision_after_head(
        tmp_path, monkeypatch, "c0ffee000001",
        "INSERT INTO users (email, display_name) VALUES ('ceo@corp.example', 'dup')")
    assert deploy.send(deploy.event("Create", properties={"TargetRevision": HEAD}))[
        "Status"] == "SUCCESS"
    execute(db, "INSERT INTO users (email, display_name) VALUES ('ceo@corp.example', 'CEO')")
    # WHEN the deploy runs it, and an operator runs it through the admin protocol
    answer = deploy.send(deploy.event("Update", properties={"TargetRevision": "c0ffee000001"}))
    admin = handler({"admin_operation": "run_migrations", "confirm": True}, LambdaContext())
    # THEN both name the constraint (the answer the column too), never the value
    assert answer["Status"] == "FAILED"
    assert "uq_users_email" in answer["Reason"]
    assert "Key (email)=(…) already exists" in str(admin["message"])
    for text in (answer["Reason"], json.dumps(admin, ensure_ascii=False)):
        assert "ceo@corp.example" not in text


@dataclass
class RealClockContext(LambdaContext):
    """A Lambda run's remaining time as the runtime reports it: falling with the clock."""

    deadline: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def running_for(seconds: float) -> RealClockContext:
    return RealClockContext(deadline=time.monotonic() + seconds)


def slow_reading_revision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A revision that reads rows (so planning runs it in a trial: 3 s), with a revision's
    MIGRATION_TIMEOUT of 5 s and so 25 s needed to start one."""
    scripts = tmp_path / "scripts"
    shutil.copytree(SAMPLE_SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "slow_read.py").write_text(
        '"""a data fix that reads rows slowly"""\nimport sqlalchemy as sa\nfrom alembic import op\n'
        f'\nrevision = "5a0e1c2d3b4f"\ndown_revision = "{HEAD}"\nbranch_labels = None\n'
        'depends_on = None\n\n\ndef upgrade() -> None:\n'
        '    bind = op.get_bind()\n'
        '    bind.execute(sa.text("SELECT pg_sleep(3), count(*) FROM users")).fetchone()\n'
        '    op.add_column("users", sa.Column("nickname", sa.Text(), nullable=True))\n\n\n'
        'def downgrade() -> None:\n    op.drop_column("users", "nickname")\n')
    monkeypatch.setenv("ALEMBIC_SCRIPT_LOCATION", str(scripts))
    monkeypatch.setenv("MIGRATION_TIMEOUT", "5")
    handler_module._resource = None


def test_a_poll_starts_no_revision_once_planning_has_used_the_time_it_needs(
    deploy: Deploy, db: sa.Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN a slow revision to plan and a first run too short to start it
    slow_reading_revision(monkeypatch, tmp_path)
    deploy.send(deploy.event("Create"))
    update = deploy.event("Update", properties={"TargetRevision": "5a0e1c2d3b4f"})
    handler(update, running_for(24))
    (poll,) = deploy.scheduled_polls()
    answered = len(deploy.recorder.requests)
    # WHEN a poll starts with 27 s, passes the 25 s check, and its planning takes 3 s
    handler(poll, running_for(27))
    # THEN it starts no revision, answers nothing, and keeps polling
    assert version_rows(db) == [HEAD]
    assert len(deploy.recorder.requests) == answered
    (again,) = deploy.scheduled_polls()
    # AND the next poll, with a whole run, applies the revision and answers
    handler(again, LambdaContext())
    assert len(deploy.recorder.requests) == answered + 1
    answer = deploy.recorder.requests[-1].body
    assert answer["Status"] == "SUCCESS", answer.get("Reason")
    assert version_rows(db) == ["5a0e1c2d3b4f"]


def test_runs_that_never_have_the_time_for_a_revision_fail_the_deploy(
    deploy: Deploy, db: sa.Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN a slow revision to plan, and Lambda runs that each leave too little after it
    slow_reading_revision(monkeypatch, tmp_path)
    deploy.send(deploy.event("Create"))
    handler(deploy.event("Update", properties={"TargetRevision": "5a0e1c2d3b4f"}),
            running_for(24))
    answered = len(deploy.recorder.requests)
    # WHEN every poll stops before the revision
    for _ in range(3):
        (poll,) = deploy.scheduled_polls()
        handler(poll, running_for(27))
    # THEN the third answers FAILED with what to do, polls no more, and nothing changed
    assert len(deploy.recorder.requests) == answered + 1
    answer = deploy.recorder.requests[-1].body
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("timeout: 3 runs in a row stopped before their first "
                                       "revision")
    assert "Raise the Lambda timeout" in answer["Reason"]
    assert deploy.scheduled_polls() == []
    assert version_rows(db) == [HEAD]
