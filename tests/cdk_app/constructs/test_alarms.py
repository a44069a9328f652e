"""Alarms: thresholds from the guide, the shared metric names, an encrypted topic."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from cdk_app.constructs.alarms import MigrationAlarms
from cdk_app.metrics import MigrationMetrics, migration_metric
from migration_resource import metric_names as names
from tests.cdk_app.support import Synth


def alarms(synth: Synth) -> dict[str, dict[str, Any]]:
    return {key.removeprefix("Alarms")[:-8]: value["Properties"] for key, value in
            synth.resources("application", "AWS::CloudWatch::Alarm").items()}


def test_every_alarm_the_issue_names(dev: Synth) -> None:
    found = alarms(dev)
    assert set(found) == {"MigrationFailed", "MigrationSlow", "DatabaseConnectionErrors",
                          "MigrationFunctionErrors", "MigrationFunctionThrottles",
                          "DatabaseCpuHigh", "DatabaseFreeStorageLow"}
    failed = found["MigrationFailed"]
    assert (failed["Namespace"], failed["MetricName"]) == (names.NAMESPACE,
                                                           names.MIGRATION_FAILED)
    assert failed["Dimensions"] == [{"Name": names.STAGE_DIMENSION, "Value": "development"}]
    assert failed["Threshold"] == 1
    assert failed["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    slow = found["MigrationSlow"]
    assert (slow["MetricName"], slow["Threshold"], slow["ComparisonOperator"]) == (
        names.MIGRATION_DURATION_SECONDS, 300, "GreaterThanThreshold")
    assert found["DatabaseConnectionErrors"]["MetricName"] == names.DATABASE_CONNECTION_ERRORS
    assert found["MigrationFunctionErrors"]["MetricName"] == "Errors"
    assert found["MigrationFunctionThrottles"]["MetricName"] == "Throttles"
    assert found["DatabaseCpuHigh"]["MetricName"] == "CPUUtilization"
    storage = found["DatabaseFreeStorageLow"]
    assert storage["MetricName"] == "FreeStorageSpace"
    assert storage["Threshold"] == 2 * 1024**3  # 10 % of 20 GiB
    assert storage["Dimensions"] == [{"Name": "DBInstanceIdentifier",
                                      "Value": "dbmigrations-dev-database"}]


def test_every_alarm_notifies_the_topic_and_ignores_missing_data(dev: Synth) -> None:
    topic = next(iter(dev.resources("application", "AWS::SNS::Topic")))
    for name, alarm in alarms(dev).items():
        assert alarm["AlarmActions"] == [{"Ref": topic}], name
        assert alarm["OKActions"] == [{"Ref": topic}], name
        assert alarm["TreatMissingData"] == "notBreaching", name


def test_production_metrics_carry_the_production_dimension(prod: Synth) -> None:
    assert alarms(prod)["MigrationFailed"]["Dimensions"] == [
        {"Name": "Stage", "Value": "production"}]


def test_topic_is_encrypted_tls_only_and_cloudwatch_may_use_the_key(dev: Synth) -> None:
    topic = dev.one("application", "AWS::SNS::Topic")["Properties"]
    assert "KmsMasterKeyId" in topic
    dev.application.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    key_policy = dev.one("application", "AWS::KMS::Key")["Properties"]["KeyPolicy"]
    assert any(statement.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
               for statement in key_policy["Statement"])
    policy = dev.one("application", "AWS::SNS::TopicPolicy")["Properties"]["PolicyDocument"]
    assert any(statement["Effect"] == "Deny" and statement["Condition"] ==
               {"Bool": {"aws:SecureTransport": "false"}} for statement in policy["Statement"])
    dev.application.resource_count_is("AWS::SNS::Subscription", 0)  # alarmEmail: null


def test_optional_email_subscription(variants: dict[str, Synth]) -> None:
    variants["prod-nat"].application.has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "email", "Endpoint": "ops@example.com"})


def test_aurora_alarms_use_cluster_metrics(variants: dict[str, Synth]) -> None:
    found = alarms(variants["prod-aurora"])
    assert found["DatabaseCpuHigh"]["Dimensions"] == [
        {"Name": "DBClusterIdentifier", "Value": "dbmigrations-prod-database"}]
    assert found["DatabaseFreeStorageLow"]["MetricName"] == "FreeLocalStorage"


def test_metric_definitions_stand_apart_from_the_alarms() -> None:
    # GIVEN metric definitions built alone (no alarm construct)
    metric = migration_metric(names.MIGRATION_FAILED, "production", "Sum")
    # THEN they already carry namespace, name, dimension and statistic
    assert (metric.namespace, metric.metric_name, metric.statistic) == (
        names.NAMESPACE, names.MIGRATION_FAILED, "Sum")
    assert metric.dimensions == {names.STAGE_DIMENSION: "production"}
    assert {field for field in MigrationMetrics.__dataclass_fields__} >= {
        "failed", "duration_seconds", "connection_errors", "function_errors",
        "function_throttles", "database_cpu", "database_free_storage"}


def test_alarm_construct_alone_with_an_email() -> None:
    stack = cdk.Stack(cdk.App(), "Alone")
    fn = lambda_.Function.from_function_name(stack, "Fn", "fn")
    metric = migration_metric(names.MIGRATION_FAILED, "development", "Sum")
    metrics = MigrationMetrics(*([metric] * 7), fn.metric_errors(), fn.metric_errors(),
                               fn.metric_errors(), metric, metric, metric)
    MigrationAlarms(stack, "Alarms", metrics=metrics, free_storage_threshold_bytes=1,
                    alarm_email="me@example.com", name_prefix="Alone")
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::CloudWatch::Alarm", 7)
    template.has_resource_properties("AWS::SNS::Subscription", {"Endpoint": "me@example.com"})
