"""Database: RDS instance or Aurora cluster, secret, encryption, port, parameters."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match

from cdk_app.constructs.database import PARAMETERS, performance_insights_supported
from tests.cdk_app.support import Synth


def instance(synth: Synth) -> dict[str, Any]:
    return synth.one("database", "AWS::RDS::DBInstance")


def test_instance_is_encrypted_private_and_uses_a_generated_secret(dev: Synth) -> None:
    properties = instance(dev)["Properties"]
    assert properties["StorageEncrypted"] is True
    assert properties["PubliclyAccessible"] is False
    assert properties["Engine"] == "postgres"
    assert properties["EngineVersion"] == "17.6"
    assert properties["DBInstanceClass"] == "db.t4g.micro"
    assert properties["AllocatedStorage"] == "20"
    assert properties["DBInstanceIdentifier"] == "dbmigrations-dev-database"
    assert properties["DBName"] == "app"
    # The password is a dynamic reference into the generated secret, never a literal.
    password = properties["MasterUserPassword"]["Fn::Join"][1]
    assert password[0] == "{{resolve:secretsmanager:"
    dev.database.has_resource_properties("AWS::SecretsManager::Secret", {
        "GenerateSecretString": Match.object_like({
            "SecretStringTemplate": '{"username":"dbadmin"}', "GenerateStringKey": "password"}),
    })
    dev.database.resource_count_is("AWS::SecretsManager::SecretTargetAttachment", 1)


def test_security_group_admits_only_the_lambdas_on_5432(dev: Synth) -> None:
    ingress = dev.resources("database", "AWS::EC2::SecurityGroupIngress")
    to_database = [rule["Properties"] for rule in ingress.values()
                   if rule["Properties"]["FromPort"] == 5432]
    assert len(to_database) == 1
    rule = to_database[0]
    assert rule["ToPort"] == 5432 and "CidrIp" not in rule
    source = rule["SourceSecurityGroupId"]["Fn::GetAtt"][0]
    assert source.startswith("NetworkFunctionsSecurityGroup")
    database_sg = next(value for key, value in dev.resources("database",
                                                             "AWS::EC2::SecurityGroup").items()
                       if key.startswith("DatabaseSecurityGroup"))
    assert "SecurityGroupIngress" not in database_sg["Properties"]


def test_parameter_group_forces_tls_and_logs_slow_statements(dev: Synth) -> None:
    group = dev.one("database", "AWS::RDS::DBParameterGroup")["Properties"]
    assert group["Family"] == "postgres17"
    assert group["Parameters"] == PARAMETERS
    assert PARAMETERS["rds.force_ssl"] == "1"
    assert int(PARAMETERS["log_min_duration_statement"]) > 0


def test_development_can_be_deleted_production_is_protected(dev: Synth, prod: Synth) -> None:
    dev_db, prod_db = instance(dev), instance(prod)
    assert dev_db["Properties"]["DeletionProtection"] is False
    assert dev_db["DeletionPolicy"] == "Delete"
    assert prod_db["Properties"]["DeletionProtection"] is True
    assert prod_db["DeletionPolicy"] == "Snapshot"
    assert prod_db["UpdateReplacePolicy"] == "Snapshot"
    assert prod_db["Properties"]["MultiAZ"] is True
    assert prod_db["Properties"]["BackupRetentionPeriod"] == 14


def test_performance_insights_where_the_class_allows(dev: Synth, prod: Synth) -> None:
    assert instance(dev)["Properties"].get("EnablePerformanceInsights") is not True  # micro
    assert instance(prod)["Properties"]["EnablePerformanceInsights"] is True  # medium
    assert not performance_insights_supported("db.t4g.small")
    assert performance_insights_supported("db.r7g.large")


def test_exported_logs_have_retention_without_a_log_retention_lambda(prod: Synth) -> None:
    prod.database.has_resource_properties("AWS::Logs::LogGroup", {
        "LogGroupName": "/aws/rds/instance/dbmigrations-prod-database/postgresql",
        "RetentionInDays": 365})
    prod.database.resource_count_is("AWS::Lambda::Function", 0)
    assert instance(prod)["Properties"]["EnableCloudwatchLogsExports"] == [
        "postgresql", "upgrade"]


def test_aurora_cluster_by_configuration(variants: dict[str, Synth]) -> None:
    aurora = variants["prod-aurora"]
    aurora.database.resource_count_is("AWS::RDS::DBInstance", 2)  # writer + reader (multiAz)
    cluster = aurora.one("database", "AWS::RDS::DBCluster")
    properties = cluster["Properties"]
    assert properties["Engine"] == "aurora-postgresql"
    assert properties["EngineVersion"] == "17.6"
    assert properties["StorageEncrypted"] is True
    assert properties["DeletionProtection"] is True
    assert properties["DBClusterIdentifier"] == "dbmigrations-prod-database"
    assert cluster["DeletionPolicy"] == "Snapshot"
    aurora.database.has_resource_properties("AWS::RDS::DBClusterParameterGroup", {
        "Family": "aurora-postgresql17", "Parameters": PARAMETERS})
    aurora.database.has_resource_properties("AWS::RDS::DBInstance", {
        "DBInstanceClass": "db.r7g.large", "PubliclyAccessible": False,
        "EnablePerformanceInsights": True})
