"""Pre-migration snapshots: names RDS accepts, and RDS calls against the moto server."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from migration_resource.snapshots import (
    SNAPSHOT_PREFIX,
    SnapshotError,
    SnapshotTarget,
    database_status,
    snapshot_identifier,
    snapshot_status,
    start_snapshot,
)
from tests.conftest import Aws

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
# RDS's rule for both snapshot kinds: a letter first, letters/digits/hyphens, no "--",
# no trailing hyphen; cluster snapshots at most 63 characters.
VALID = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9]))*$")
TAGS = {"CreatedBy": "db-migrations", "Purpose": "pre-migration"}


def assert_valid(identifier: str) -> None:
    assert VALID.match(identifier), identifier
    assert 1 <= len(identifier) <= 63, identifier
    assert identifier.startswith(SNAPSHOT_PREFIX)


# -- names ------------------------------------------------------------------------------------
def test_identifier_is_recognisable() -> None:
    assert snapshot_identifier("OrdersStack", "a1b2c3d4e5f6a7b8", NOW) == (
        "premigrate-ordersstack-a1b2c3d4e5f6-20260304050607"
    )


@pytest.mark.parametrize("stack, revision", [
    ("My_Stack.prod--2", "head"),
    ("-leading-and-trailing-", "a1b2,c3d4"),  # two heads
    ("Stäck ünïcode", "rev/with:odd@chars"),
    ("", ""),
    ("---", "---"),
    ("x" * 300, "f" * 40),
])
def test_odd_inputs_still_give_valid_identifiers(stack: str, revision: str) -> None:
    assert_valid(snapshot_identifier(stack, revision, NOW))


def test_long_stack_names_are_cut_but_stay_distinct() -> None:
    shared = "production-orders-service-database-migrations-stack-"
    first = snapshot_identifier(shared + "eu", "a1b2c3d4e5f6", NOW)
    second = snapshot_identifier(shared + "us", "a1b2c3d4e5f6", NOW)
    assert_valid(first)
    assert_valid(second)
    assert first != second
    assert first.startswith("premigrate-production-orders")
    assert first.endswith("-a1b2c3d4e5f6-20260304050607")  # revision and time always kept


def test_time_is_utc_and_makes_names_unique() -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2026, 3, 4, 7, 6, 7, tzinfo=plus_two)
    assert snapshot_identifier("s", "r", local) == snapshot_identifier("s", "r", NOW)
    naive = datetime(2026, 3, 4, 5, 6, 7)  # taken as UTC
    assert snapshot_identifier("s", "r", naive) == snapshot_identifier("s", "r", NOW)
    assert snapshot_identifier("s", "r", NOW + timedelta(seconds=1)) != snapshot_identifier(
        "s", "r", NOW)


# -- properties -------------------------------------------------------------------------------
def test_target_from_properties() -> None:
    assert SnapshotTarget.from_properties({"DbInstanceIdentifier": "appdb"}) == SnapshotTarget(
        "instance", "appdb")
    assert SnapshotTarget.from_properties(
        {"DbClusterIdentifier": " aurora ", "DbInstanceIdentifier": ""}
    ) == SnapshotTarget("cluster", "aurora")


@pytest.mark.parametrize("properties, message", [
    ({"DbInstanceIdentifier": "a", "DbClusterIdentifier": "b"}, "not both"),
    ({}, "set DbInstanceIdentifier .* or DbClusterIdentifier"),
    ({"DbInstanceIdentifier": "  "}, "set DbInstanceIdentifier"),
])
def test_target_properties_must_name_exactly_one(properties: dict[str, str], message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        SnapshotTarget.from_properties(properties)


def test_target_kind_is_checked() -> None:
    with pytest.raises(SnapshotError, match="instance or cluster"):
        SnapshotTarget("table", "x")  # type: ignore[arg-type]


# -- against the moto server ------------------------------------------------------------------
@pytest.fixture
def rds(aws: Aws) -> Any:
    return aws.client("rds")


def create_instance(rds: Any, name: str = "appdb") -> SnapshotTarget:
    rds.create_db_instance(DBInstanceIdentifier=name, Engine="postgres",
                           DBInstanceClass="db.t3.micro", AllocatedStorage=20,
                           MasterUsername="app", MasterUserPassword="password-123456")
    return SnapshotTarget("instance", name)


def create_cluster(rds: Any, name: str = "aurora") -> SnapshotTarget:
    rds.create_db_cluster(DBClusterIdentifier=name, Engine="aurora-postgresql",
                          MasterUsername="app", MasterUserPassword="password-123456")
    return SnapshotTarget("cluster", name)


def test_instance_snapshot(rds: Any) -> None:
    # GIVEN an available instance
    target = create_instance(rds)
    assert database_status(rds, target) == "available"
    snapshot_id = snapshot_identifier("OrdersStack", "a1b2c3d4e5f6", NOW)
    assert snapshot_status(rds, target, snapshot_id) is None  # not started yet
    # WHEN its snapshot is started
    start_snapshot(rds, target, snapshot_id, TAGS)
    # THEN RDS has it (next to moto's automated one), tagged, and (moto) available at once
    assert snapshot_status(rds, target, snapshot_id) == "available"
    [found] = rds.describe_db_snapshots(DBInstanceIdentifier="appdb",
                                           SnapshotType="manual")["DBSnapshots"]
    assert found["DBSnapshotIdentifier"] == snapshot_id
    tags = rds.list_tags_for_resource(ResourceName=found["DBSnapshotArn"])["TagList"]
    assert {t["Key"]: t["Value"] for t in tags} == TAGS


def test_cluster_snapshot(rds: Any) -> None:
    target = create_cluster(rds)
    assert database_status(rds, target) == "available"
    snapshot_id = snapshot_identifier("x" * 200, "f" * 40, NOW)  # the longest name we make
    assert snapshot_status(rds, target, snapshot_id) is None
    start_snapshot(rds, target, snapshot_id, TAGS)
    assert snapshot_status(rds, target, snapshot_id) == "available"
    [found] = rds.describe_db_cluster_snapshots(DBClusterIdentifier="aurora",
                                                SnapshotType="manual")["DBClusterSnapshots"]
    assert found["DBClusterSnapshotIdentifier"] == snapshot_id
    tags = rds.list_tags_for_resource(ResourceName=found["DBClusterSnapshotArn"])["TagList"]
    assert {t["Key"]: t["Value"] for t in tags} == TAGS
    # an instance snapshot of the same name does not exist: the kinds are kept apart
    assert snapshot_status(rds, SnapshotTarget("instance", "aurora"), snapshot_id) is None


def test_stopped_instance_status(rds: Any) -> None:
    target = create_instance(rds)
    rds.stop_db_instance(DBInstanceIdentifier="appdb")
    assert database_status(rds, target) == "stopped"


@pytest.mark.parametrize("target, property_name", [
    (SnapshotTarget("instance", "missing"), "DbInstanceIdentifier"),
    (SnapshotTarget("cluster", "missing"), "DbClusterIdentifier"),
])
def test_unknown_databases_are_snapshot_errors(
    rds: Any, target: SnapshotTarget, property_name: str
) -> None:
    with pytest.raises(SnapshotError, match=f"Check the {property_name} property") as status:
        database_status(rds, target)
    assert str(status.value).startswith(f"Cannot read the status of DB {target.kind} 'missing'")
    with pytest.raises(SnapshotError, match="NotFound") as start:
        start_snapshot(rds, target, "premigrate-x", TAGS)
    assert str(start.value).startswith(f"Cannot snapshot DB {target.kind} 'missing'")
    assert "nothing was changed" in str(start.value)


def test_an_existing_snapshot_name_is_a_snapshot_error(rds: Any) -> None:
    target = create_instance(rds)
    start_snapshot(rds, target, "premigrate-once", TAGS)
    with pytest.raises(SnapshotError) as again:
        start_snapshot(rds, target, "premigrate-once", TAGS)
    assert again.value.code == "DBSnapshotAlreadyExists"


def test_an_invalid_snapshot_name_is_a_snapshot_error(rds: Any) -> None:
    target = create_instance(rds)
    with pytest.raises(SnapshotError, match="InvalidParameterValue"):
        start_snapshot(rds, target, "bad--name", TAGS)


def test_unreachable_rds_api_is_a_snapshot_error(aws: Aws) -> None:
    rds = boto3.client("rds", endpoint_url="http://127.0.0.1:9",
                       config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(SnapshotError, match=r"EndpointConnectionError.*network path"):
        database_status(rds, SnapshotTarget("instance", "appdb"))


# AccessDenied and quota errors cannot be provoked in moto; botocore's Stubber answers with
# them on a real client so the translation is tested with AWS's real error shapes.
@pytest.mark.parametrize("code, advice", [
    ("AccessDenied", "Allow the migration Lambda rds:CreateDB(Cluster)Snapshot"),
    ("SnapshotQuotaExceeded", "Delete old manual snapshots"),
    ("InvalidDBInstanceState", "Wait until the database is available"),
    ("SomethingNew", "Check the database in the RDS console"),
])
def test_aws_errors_become_short_reasons_without_arns(
    aws: Aws, code: str, advice: str, caplog: pytest.LogCaptureFixture
) -> None:
    rds = aws.client("rds")
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:appdb-credentials-AbCdEf"
    with Stubber(rds) as stub:
        stub.add_client_error(
            "create_db_snapshot", service_error_code=code, http_status_code=400,
            service_message=f"User arn:aws:sts::123456789012:assumed-role/migrator is not "
                            f"authorized to perform rds:CreateDBSnapshot; {arn}",
        )
        with pytest.raises(SnapshotError) as failed:
            start_snapshot(rds, SnapshotTarget("instance", "appdb"), "premigrate-x", TAGS)
    message = str(failed.value)
    assert message.startswith(f"Cannot snapshot DB instance 'appdb' ({code}); nothing was changed")
    assert advice in message
    assert "arn:" not in message and len(message) < 200
    assert failed.value.code == code
    assert "arn:" not in caplog.text and "<arn>" in caplog.text  # logged, masked
