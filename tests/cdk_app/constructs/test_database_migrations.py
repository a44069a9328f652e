"""DatabaseMigrations used on its own, as a team's CDK app uses it: an imported instance, an
imported cluster and a new instance, each with one of the team's functions connected.

Only the documented import is used (the module's docstring shows it), so what passes here is
what a team installing the package gets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template

import cdk_app.constructs.database_migrations as documented
from cdk_app.constructs.database_migrations import DatabaseMigrations, MigrationSettings
from tests.alembic.support import REPO_ROOT
from tests.cdk_app.iam import by_action
from tests.cdk_app.support import BUNDLING_STACKS

DOCUMENTED_IMPORT = ("from cdk_app.constructs.database_migrations import DatabaseMigrations, "
                     "MigrationSettings")
ENV = cdk.Environment(account="123456789012", region="eu-west-1")
ARN = "arn:<AWS::Partition>:rds:eu-west-1:123456789012"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:orders/db-AbCdEf"
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:team-alarms"
NAMING = {"pk": "pk_%(table_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s"}
MIGRATIONS = REPO_ROOT / "alembic"


@dataclass
class TeamStack:
    stack: cdk.Stack
    migrations: DatabaseMigrations
    api: lambda_.Function
    template: dict[str, Any]

    def of_type(self, type_: str) -> dict[str, dict[str, Any]]:
        return {key: value for key, value in self.template["Resources"].items()
                if value["Type"] == type_}

    def logical_id(self, construct: Any) -> str:
        child = construct.node.default_child
        return str(self.stack.get_logical_id(child))

    def custom(self) -> dict[str, Any]:
        (found,) = self.of_type("Custom::DatabaseMigration").values()
        return found

    def function(self, logical_id: str) -> dict[str, Any]:
        return self.template["Resources"][logical_id]  # type: ignore[no-any-return]

    def granted(self, function: lambda_.Function) -> dict[str, list[str]]:
        role = self.logical_id(function.role)
        statements = [statement
                      for policy in self.of_type("AWS::IAM::Policy").values()
                      if {"Ref": role} in policy["Properties"]["Roles"]
                      for statement in policy["Properties"]["PolicyDocument"]["Statement"]]
        return by_action(statements)


def team_network(stack: cdk.Stack) -> tuple[ec2.IVpc, ec2.ISecurityGroup]:
    vpc = ec2.Vpc.from_vpc_attributes(
        stack, "Vpc", vpc_id="vpc-0123456789abcdef0",
        availability_zones=["eu-west-1a", "eu-west-1b"],
        private_subnet_ids=["subnet-0123456789abcdef1", "subnet-0123456789abcdef2"])
    group = ec2.SecurityGroup.from_security_group_id(stack, "Clients", "sg-0123456789abcdef0",
                                                     mutable=False)
    return vpc, group


def team_function(stack: cdk.Stack, migrations: DatabaseMigrations,
                  timeout: int = 30) -> lambda_.Function:
    network = migrations.network
    return lambda_.Function(
        stack, "Api", runtime=lambda_.Runtime.PYTHON_3_12, handler="api.handler",
        code=lambda_.Code.from_inline("def handler(event, context):\n    return {}\n"),
        timeout=cdk.Duration.seconds(timeout), vpc=network.vpc,
        vpc_subnets=network.subnets, security_groups=[network.security_group])


def imported_instance(app: cdk.App) -> TeamStack:
    stack = cdk.Stack(app, "ImportedInstance", env=ENV)
    vpc, group = team_network(stack)
    migrations = DatabaseMigrations(
        stack, "Migrations",
        database=rds.DatabaseInstance.from_database_instance_attributes(
            stack, "Orders", instance_identifier="orders-db", port=5432,
            instance_endpoint_address="orders-db.cx1a2b3c4d5e.eu-west-1.rds.amazonaws.com",
            security_groups=[group]),
        secret=secretsmanager.Secret.from_secret_complete_arn(stack, "Secret", SECRET_ARN),
        vpc=vpc, subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        security_group=group, migrations=MIGRATIONS,
        settings=MigrationSettings(stage_kind="production", function_timeout_seconds=900),
        alarm_topic=sns.Topic.from_topic_arn(stack, "TeamAlarms", TOPIC_ARN),
        naming_convention=NAMING, metadata_import="orders.models:Base.metadata",
        release_id="orders-api-2026.12.1")
    api = team_function(stack, migrations)
    migrations.connect_application(api)
    for name, value in (("State", migrations.state), ("FromRevision", migrations.from_revision),
                        ("ToRevision", migrations.to_revision)):
        cdk.CfnOutput(stack, name, value=value)
    return TeamStack(stack, migrations, api, {})


def imported_cluster(app: cdk.App) -> TeamStack:
    stack = cdk.Stack(app, "ImportedCluster", env=ENV)
    vpc, group = team_network(stack)
    migrations = DatabaseMigrations(
        stack, "Migrations",
        database=rds.DatabaseCluster.from_database_cluster_attributes(
            stack, "Orders", cluster_identifier="orders-cluster", port=5432,
            cluster_endpoint_address="orders-cluster.cluster-cx1a2b3c4d5e.eu-west-1.rds."
                                     "amazonaws.com"),
        secret=secretsmanager.Secret.from_secret_complete_arn(stack, "Secret", SECRET_ARN),
        vpc=vpc, subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        security_group=group, migrations=MIGRATIONS)
    api = team_function(stack, migrations)
    migrations.connect_application(api)
    return TeamStack(stack, migrations, api, {})


def new_instance(app: cdk.App) -> TeamStack:
    stack = cdk.Stack(app, "NewInstance", env=ENV)
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=0, subnet_configuration=[
        ec2.SubnetConfiguration(name="Isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)])
    clients = ec2.SecurityGroup(stack, "Clients", vpc=vpc)
    database = rds.DatabaseInstance(
        stack, "Orders", engine=rds.DatabaseInstanceEngine.postgres(
            version=rds.PostgresEngineVersion.VER_17),
        vpc=vpc, vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
        credentials=rds.Credentials.from_generated_secret("dbadmin"))
    database.connections.allow_default_port_from(clients)
    assert database.secret is not None
    migrations = DatabaseMigrations(
        stack, "Migrations", database=database, secret=database.secret, vpc=vpc,
        subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
        security_group=clients, migrations=MIGRATIONS,
        settings=MigrationSettings(stage_kind="development", snapshot_before_migrate=False,
                                   alarm_email="team@example.com"))
    api = team_function(stack, migrations, timeout=60)  # short for an auto-migrating request
    migrations.connect_application(api, auto_migrate=True, label="Orders API")
    return TeamStack(stack, migrations, api, {})


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TeamStack]:
    # One app, three stacks, no bundling: the migration Lambda's asset is not built here.
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("team")),
                  context={BUNDLING_STACKS: []})
    stacks = {"imported_instance": imported_instance(app),
              "imported_cluster": imported_cluster(app), "new_instance": new_instance(app)}
    assembly = app.synth()
    for found in stacks.values():
        artifact = assembly.get_stack_by_name(found.stack.stack_name)
        found.template = json.loads(
            (Path(assembly.directory) / artifact.template_file).read_text())
    return stacks


# -- the documented import ----------------------------------------------------------------------
def test_the_documented_import_is_the_one_used_here() -> None:
    assert documented.__doc__ is not None and DOCUMENTED_IMPORT in documented.__doc__
    assert DOCUMENTED_IMPORT in Path(__file__).read_text()
    # The engine is bundled from the package's installation, not from the team's folder.
    assert (documented.ENGINE_ROOT / "migration_resource" / "handler.py").is_file()


# -- imported instance ----------------------------------------------------------------------------
def test_imported_instance_creates_no_database_resource(team: dict[str, TeamStack]) -> None:
    found = team["imported_instance"]
    types = {value["Type"] for value in found.template["Resources"].values()}
    # nothing that could touch the team's database, its secret or its network
    assert not {t for t in types if t.startswith(("AWS::RDS::", "AWS::SecretsManager::",
                                                  "AWS::EC2::"))}
    # the alarms notify the team's topic: no topic or key of the construct's own
    assert not {"AWS::SNS::Topic", "AWS::KMS::Key"} & types
    for alarm in found.of_type("AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [TOPIC_ARN]


def test_imported_instance_custom_resource_and_its_properties(
    team: dict[str, TeamStack],
) -> None:
    found = team["imported_instance"]
    custom = found.custom()
    function_id = found.logical_id(found.migrations.function)
    assert custom["Properties"]["ServiceToken"] == {"Fn::GetAtt": [function_id, "Arn"]}
    properties = custom["Properties"]
    assert properties["DbInstanceIdentifier"] == "orders-db"
    assert "DbClusterIdentifier" not in properties
    assert (properties["Stage"], properties["SnapshotBeforeMigrate"],
            properties["AllowDestructive"], properties["MigrateOnDeploy"]) == (
        "production", True, False, True)
    assert {"TargetRevision", "HistoryDigest", "MigrationsHash"} <= set(properties)
    assert properties["ServiceTimeout"] == "3600"
    # each release of the application reaches the resource (a deferred contract revision
    # runs then); without a release id there is no such property
    assert properties["ReleaseId"] == "orders-api-2026.12.1"
    assert "ReleaseId" not in team["new_instance"].custom()["Properties"]
    # runs after the polling permissions it needs
    polling = found.logical_id(found.migrations.custom_resource.polling_policy)
    assert custom["DependsOn"] == [polling]


def test_imported_instance_iam_is_scoped_to_the_secret_and_the_database(
    team: dict[str, TeamStack],
) -> None:
    found = team["imported_instance"]
    granted = found.granted(found.migrations.function)
    database, snapshots = f"{ARN}:db:orders-db", f"{ARN}:snapshot:premigrate-*"
    assert granted["secretsmanager:GetSecretValue"] == [SECRET_ARN]
    assert sorted(granted["rds:CreateDBSnapshot"]) == sorted([database, snapshots])
    assert granted["rds:AddTagsToResource"] == [snapshots]
    assert granted["rds:DescribeDBInstances"] == [database]
    assert sorted(granted["rds:DescribeDBSnapshots"]) == sorted([database, snapshots])
    rds_actions = {action for action in granted if action.startswith("rds:")}
    assert rds_actions == {"rds:CreateDBSnapshot", "rds:AddTagsToResource",
                           "rds:DescribeDBInstances", "rds:DescribeDBSnapshots"}
    # the team's function reads the secret and nothing of RDS
    api = found.granted(found.api)
    assert api["secretsmanager:GetSecretValue"] == [SECRET_ARN]
    assert not any(action.startswith("rds:") for action in api)


def test_imported_instance_functions_run_in_the_given_network(
    team: dict[str, TeamStack],
) -> None:
    found = team["imported_instance"]
    for function in (found.migrations.function, found.api):
        config = found.function(found.logical_id(function))["Properties"]["VpcConfig"]
        assert config["SecurityGroupIds"] == ["sg-0123456789abcdef0"]
        assert config["SubnetIds"] == ["subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]


def test_engine_settings_reach_the_migration_function(team: dict[str, TeamStack]) -> None:
    found = team["imported_instance"]
    function = found.function(found.logical_id(found.migrations.function))["Properties"]
    environment = function["Environment"]["Variables"]
    assert environment["DATABASE_SECRET_ARN"] == SECRET_ARN
    assert environment["DB_INSTANCE_IDENTIFIER"] == "orders-db"
    assert json.loads(environment["MIGRATION_NAMING_CONVENTION"]) == NAMING
    assert environment["MIGRATION_METADATA"] == "orders.models:Base.metadata"
    assert (environment["STAGE"], environment["MIGRATION_TIMEOUT"]) == ("production", "300")
    assert (function["Timeout"], function["ReservedConcurrentExecutions"]) == (900, 1)


def test_connected_function_gets_the_schema_check_and_runs_after_the_schema(
    team: dict[str, TeamStack],
) -> None:
    found = team["imported_instance"]
    api = found.function(found.logical_id(found.api))
    environment = api["Properties"]["Environment"]["Variables"]
    assert environment["DATABASE_SECRET_ARN"] == SECRET_ARN
    assert (environment["AUTO_MIGRATE"], environment["ALLOW_DESTRUCTIVE"]) == ("false", "false")
    assert (environment["STAGE"], environment["MIGRATION_TIMEOUT"]) == ("production", "300")
    assert (environment["MIGRATION_LOCK_TIMEOUT"], environment["MIGRATION_LOCK_RETRIES"]) == (
        "5", "5")
    assert json.loads(environment["MIGRATION_NAMING_CONVENTION"]) == NAMING
    # schema before code
    custom_id = next(iter(found.of_type("Custom::DatabaseMigration")))
    assert custom_id in api["DependsOn"]


def test_state_and_revisions_are_attributes_of_the_custom_resource(
    team: dict[str, TeamStack],
) -> None:
    found = team["imported_instance"]
    custom_id = next(iter(found.of_type("Custom::DatabaseMigration")))
    outputs = found.template["Outputs"]
    for name in ("State", "FromRevision", "ToRevision"):
        assert outputs[name]["Value"] == {"Fn::GetAtt": [custom_id, name]}


# -- imported cluster -----------------------------------------------------------------------------
def test_imported_cluster_snapshots_the_cluster_only(team: dict[str, TeamStack]) -> None:
    found = team["imported_cluster"]
    properties = found.custom()["Properties"]
    assert properties["DbClusterIdentifier"] == "orders-cluster"
    assert "DbInstanceIdentifier" not in properties
    granted = found.granted(found.migrations.function)
    cluster, snapshots = f"{ARN}:cluster:orders-cluster", f"{ARN}:cluster-snapshot:premigrate-*"
    assert sorted(granted["rds:CreateDBClusterSnapshot"]) == sorted([cluster, snapshots])
    assert granted["rds:DescribeDBClusters"] == [cluster]
    assert sorted(granted["rds:DescribeDBClusterSnapshots"]) == sorted([cluster, snapshots])
    assert granted["rds:AddTagsToResource"] == [snapshots]
    assert not {"rds:CreateDBSnapshot", "rds:DescribeDBInstances"} & set(granted)
    environment = found.function(found.logical_id(found.migrations.function))[
        "Properties"]["Environment"]["Variables"]
    assert environment["DB_CLUSTER_IDENTIFIER"] == "orders-cluster"
    # defaults: no naming convention or metadata unless given
    assert not {"MIGRATION_NAMING_CONVENTION", "MIGRATION_METADATA"} & set(environment)


def test_imported_cluster_alarms_watch_the_cluster_and_mail_its_own_topic(
    team: dict[str, TeamStack],
) -> None:
    found = team["imported_cluster"]
    template = Template.from_json(found.template)
    template.resource_count_is("AWS::SNS::Topic", 1)  # no topic given: its own, encrypted
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": {
        "Fn::GetAtt": [found.logical_id(found.migrations.alarms.key), "Arn"]}})
    dimensions = [alarm["Properties"].get("Dimensions") for alarm in
                  found.of_type("AWS::CloudWatch::Alarm").values()]
    assert [{"Name": "DBClusterIdentifier", "Value": "orders-cluster"}] in dimensions


# -- new instance in the same stack -------------------------------------------------------------
def test_new_instance_is_referenced_and_waited_for(team: dict[str, TeamStack]) -> None:
    found = team["new_instance"]
    (instance_id,) = found.of_type("AWS::RDS::DBInstance")
    (attachment_id,) = found.of_type("AWS::SecretsManager::SecretTargetAttachment")
    custom = found.custom()
    assert custom["Properties"]["DbInstanceIdentifier"] == {"Ref": instance_id}
    # the database (and its attached secret) exist before the migration runs
    assert {instance_id, attachment_id} <= set(custom["DependsOn"])
    granted = found.granted(found.migrations.function)
    database = f"{ARN}:db:<{instance_id}>"
    assert granted["secretsmanager:GetSecretValue"] == [f"<{attachment_id}>"]
    assert sorted(granted["rds:CreateDBSnapshot"]) == sorted(
        [database, f"{ARN}:snapshot:premigrate-*"])
    assert granted["rds:DescribeDBInstances"] == [database]


def test_new_instance_auto_migrating_function(team: dict[str, TeamStack]) -> None:
    found = team["new_instance"]
    api = found.function(found.logical_id(found.api))
    environment = api["Properties"]["Environment"]["Variables"]
    assert (environment["AUTO_MIGRATE"], environment["STAGE"]) == ("true", "development")
    assert found.custom()["Properties"]["SnapshotBeforeMigrate"] is False
    assert next(iter(found.of_type("Custom::DatabaseMigration"))) in api["DependsOn"]
    # a 60 s function cannot wait out a 300 s migration: synth warns, naming the timeout
    warnings = [str(entry.data) for entry in found.api.node.metadata
                if entry.type == "aws:cdk:warning"]
    assert any("timeout of at least 360 s" in text for text in warnings), warnings
    # its row on the dashboard, under its label
    body = found.of_type("AWS::CloudWatch::Dashboard")
    assert "Orders API: errors and schema behind" in json.dumps(body)
    Template.from_json(found.template).has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "team@example.com"})


# -- misuse fails synth with a reason ------------------------------------------------------------
def test_a_function_outside_the_vpc_is_refused() -> None:
    stack = cdk.Stack(cdk.App(context={BUNDLING_STACKS: []}), "Refused", env=ENV)
    vpc, group = team_network(stack)
    migrations = DatabaseMigrations(
        stack, "Migrations",
        database=rds.DatabaseInstance.from_database_instance_attributes(
            stack, "Orders", instance_identifier="orders-db", port=5432,
            instance_endpoint_address="orders-db.example.com", security_groups=[]),
        secret=secretsmanager.Secret.from_secret_complete_arn(stack, "Secret", SECRET_ARN),
        vpc=vpc, subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        security_group=group, migrations=MIGRATIONS)
    outside = lambda_.Function(stack, "Outside", runtime=lambda_.Runtime.PYTHON_3_12,
                               handler="a.b", code=lambda_.Code.from_inline("x = 1"))
    with pytest.raises(ValueError, match="is not in a VPC"):
        migrations.connect_application(outside)


@pytest.mark.parametrize(("settings", "message"), [
    ({"stage_kind": "staging"}, "stage_kind must be one of development, production"),
    ({"function_timeout_seconds": 310}, r"function_timeout_seconds must be 330"),
    ({"service_timeout_seconds": 300}, "service_timeout_seconds must be"),
    ({"lock_timeout_seconds": 0}, "lock_timeout_seconds must be"),
])
def test_impossible_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MigrationSettings(**settings)


def test_missing_migrations_and_a_wrong_database_are_refused(tmp_path: Path) -> None:
    stack = cdk.Stack(cdk.App(context={BUNDLING_STACKS: []}), "Refused", env=ENV)
    vpc, group = team_network(stack)
    secret = secretsmanager.Secret.from_secret_complete_arn(stack, "Secret", SECRET_ARN)
    database = rds.DatabaseInstance.from_database_instance_attributes(
        stack, "Orders", instance_identifier="orders-db", port=5432,
        instance_endpoint_address="orders-db.example.com", security_groups=[])
    common: dict[str, Any] = {
        "secret": secret, "vpc": vpc, "security_group": group,
        "subnets": ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)}
    with pytest.raises(ValueError, match=r"migrations folder .* does not exist"):
        DatabaseMigrations(stack, "A", database=database, migrations=tmp_path / "none",
                           **common)
    with pytest.raises(TypeError, match=r"IDatabaseInstance or rds\.IDatabaseCluster"):
        DatabaseMigrations(stack, "B", database=secret,  # type: ignore[arg-type]
                           migrations=MIGRATIONS, **common)
    with pytest.raises(ValueError, match="metadata_import must look like"):
        DatabaseMigrations(stack, "C", database=database, migrations=MIGRATIONS,
                           metadata_import="orders.models", **common)
