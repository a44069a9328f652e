"""Migration function: runtime, bundle, concurrency, environment, logs, least privilege."""

from __future__ import annotations

from typing import Any

from migration_resource.metric_names import NAMESPACE
from tests.cdk_app.iam import by_action, statements_of_role
from tests.cdk_app.support import Synth

READ_ONLY_ON_STAR = {"ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"}


def function(synth: Synth) -> dict[str, Any]:
    return next(value for key, value in
                synth.resources("application", "AWS::Lambda::Function").items()
                if key.startswith("MigrationFunction"))


def test_python_312_bundle_one_at_a_time_in_the_vpc(dev: Synth, prod: Synth) -> None:
    properties = function(dev)["Properties"]
    assert properties["Runtime"] == "python3.12"
    assert properties["Handler"] == "migration_resource.handler.handler"
    assert properties["ReservedConcurrentExecutions"] == 1
    assert properties["Timeout"] == 600 and properties["MemorySize"] == 1024
    assert function(prod)["Properties"]["Timeout"] == 900
    assert len(properties["VpcConfig"]["SubnetIds"]) == 2
    assert properties["Code"]["S3Key"].endswith(".zip")
    assert properties["LoggingConfig"]["LogGroup"]["Ref"].startswith("MigrationLogs")
    dev.application.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})
    prod.application.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 365})


def test_asynchronous_invocations_are_never_retried(dev: Synth) -> None:
    # crhelper's poll rule invokes asynchronously: a retry would replay a stored event
    (config,) = dev.resources("application", "AWS::Lambda::EventInvokeConfig").values()
    assert config["Properties"]["MaximumRetryAttempts"] == 0
    assert config["Properties"]["FunctionName"]["Ref"].startswith("MigrationFunction")


def test_environment_names_the_secret_the_stage_and_powertools(dev: Synth) -> None:
    environment = function(dev)["Properties"]["Environment"]["Variables"]
    assert environment["DATABASE_SECRET_ARN"] == {"Fn::ImportValue": environment[
        "DATABASE_SECRET_ARN"]["Fn::ImportValue"]}
    assert "SecretAttachment" in environment["DATABASE_SECRET_ARN"]["Fn::ImportValue"]
    assert environment["STAGE"] == "development"
    assert environment["MIGRATION_TIMEOUT"] == "300"
    # the stage's table-lock settings (cdk.json migrationLockTimeoutSeconds/Retries)
    assert (environment["MIGRATION_LOCK_TIMEOUT"], environment["MIGRATION_LOCK_RETRIES"]) == (
        "5", "5")
    assert environment["DB_INSTANCE_IDENTIFIER"] == "dbmigrations-dev-database"
    assert environment["POWERTOOLS_SERVICE_NAME"] == "db-migrations"
    assert environment["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
    assert not any("PASSWORD" in name or "URL" in name for name in environment)


def test_no_managed_policies_and_no_write_action_on_star(all_synths: dict[str, Synth]) -> None:
    for name, synth in all_synths.items():
        for role in synth.resources("application", "AWS::IAM::Role").values():
            assert "ManagedPolicyArns" not in role["Properties"], name
        for prefix in ("MigrationRole", "SampleAppRole"):
            for action, resources in by_action(statements_of_role(synth, prefix)).items():
                if "*" in resources:
                    assert action in READ_ONLY_ON_STAR, (name, action)


def test_instance_snapshot_grants_are_scoped_to_the_database_and_prefix(dev: Synth) -> None:
    granted = by_action(statements_of_role(dev, "MigrationRole"))
    database = "arn:<AWS::Partition>:rds:eu-west-1:123456789012:db:dbmigrations-dev-database"
    snapshots = "arn:<AWS::Partition>:rds:eu-west-1:123456789012:snapshot:premigrate-*"
    assert sorted(granted["rds:CreateDBSnapshot"]) == sorted([database, snapshots])
    assert granted["rds:AddTagsToResource"] == [snapshots]
    assert granted["rds:DescribeDBInstances"] == [database]
    assert sorted(granted["rds:DescribeDBSnapshots"]) == sorted([database, snapshots])
    secret = granted["secretsmanager:GetSecretValue"]
    assert len(secret) == 1 and "SecretAttachment" in secret[0]
    assert granted["logs:PutLogEvents"] == ["<MigrationLogsAD1DB442.Arn>"]
    assert not {"rds:DeleteDBSnapshot", "rds:ModifyDBInstance", "rds:*"} & set(granted)


def test_cluster_snapshot_grants_for_aurora(variants: dict[str, Synth]) -> None:
    granted = by_action(statements_of_role(variants["prod-aurora"], "MigrationRole"))
    cluster = "arn:<AWS::Partition>:rds:eu-west-1:123456789012:cluster:dbmigrations-prod-database"
    snapshots = ("arn:<AWS::Partition>:rds:eu-west-1:123456789012:cluster-snapshot:"
                 "premigrate-*")
    assert sorted(granted["rds:CreateDBClusterSnapshot"]) == sorted([cluster, snapshots])
    assert granted["rds:DescribeDBClusters"] == [cluster]
    assert sorted(granted["rds:DescribeDBClusterSnapshots"]) == sorted([cluster, snapshots])
    assert "rds:CreateDBSnapshot" not in granted


def test_network_interfaces_only_in_the_own_account_subnets_and_group(dev: Synth) -> None:
    granted = by_action(statements_of_role(dev, "MigrationRole"))
    create = granted["ec2:CreateNetworkInterface"]
    assert "arn:<AWS::Partition>:ec2:eu-west-1:123456789012:network-interface/*" in create
    assert sum(":subnet/<import:" in arn for arn in create) == 2
    assert sum(":security-group/<import:" in arn for arn in create) == 1
