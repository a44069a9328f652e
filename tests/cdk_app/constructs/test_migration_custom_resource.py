"""Custom::DatabaseMigration: direct ServiceToken, properties, ServiceTimeout, polling grants."""

from __future__ import annotations

from typing import Any

from cdk_app.bundling import scripts_history_digest, target_revision
from cdk_app.constructs.migration_custom_resource import LOGICAL_ID, RESOURCE_TYPE
from tests.alembic.support import HEAD, REPO_ROOT
from tests.cdk_app.iam import by_action, statements_of_role
from tests.cdk_app.support import Synth


def resource(synth: Synth) -> dict[str, Any]:
    return synth.templates["application"]["Resources"][LOGICAL_ID]


def test_is_invoked_directly_by_cloudformation(dev: Synth) -> None:
    custom = resource(dev)
    assert custom["Type"] == RESOURCE_TYPE
    token = custom["Properties"]["ServiceToken"]["Fn::GetAtt"]
    assert token[0].startswith("MigrationFunction") and token[1] == "Arn"
    # No Provider framework: the only Lambdas are the migration and sample-app functions.
    dev.application.resource_count_is("AWS::Lambda::Function", 2)


def test_properties_resolved_at_synth(dev: Synth, prod: Synth) -> None:
    properties = resource(dev)["Properties"]
    assert properties["TargetRevision"] == HEAD == target_revision(REPO_ROOT)
    assert properties["HistoryDigest"] == scripts_history_digest(REPO_ROOT)
    assert len(properties["MigrationsHash"]) == 64
    assert properties["ServiceTimeout"] == "3600"
    assert properties["Stage"] == "development"
    assert properties["SnapshotBeforeMigrate"] is False
    assert properties["AllowDestructive"] is False
    assert properties["MigrateOnDeploy"] is True
    assert properties["DbInstanceIdentifier"] == "dbmigrations-dev-database"
    assert "DbClusterIdentifier" not in properties
    production = resource(prod)["Properties"]
    assert production["Stage"] == "production"
    assert production["SnapshotBeforeMigrate"] is True
    assert production["MigrateOnDeploy"] is True


def test_migrate_on_deploy_false_reaches_the_handler(variants: dict[str, Synth]) -> None:
    from migration_resource.custom_resource import MigrationProperties  # noqa: PLC0415

    # GIVEN a stage with migrateOnDeploy false: the property flips, so CloudFormation
    # sends an Update, and the handler reads it as CloudFormation sends it (a string)
    properties = resource(variants["prod-nat"])["Properties"]
    assert properties["MigrateOnDeploy"] is False
    as_sent = {key: str(value).lower() if isinstance(value, bool) else value
               for key, value in properties.items() if key != "ServiceToken"}
    assert as_sent["MigrateOnDeploy"] == "false"
    assert MigrationProperties.parse(as_sent).migrate_on_deploy is False


def test_aurora_passes_the_cluster_identifier(variants: dict[str, Synth]) -> None:
    properties = resource(variants["prod-aurora"])["Properties"]
    assert properties["DbClusterIdentifier"] == "dbmigrations-prod-database"
    assert "DbInstanceIdentifier" not in properties


def test_the_handler_accepts_the_synthesized_properties(all_synths: dict[str, Synth]) -> None:
    from migration_resource.custom_resource import MigrationProperties  # noqa: PLC0415

    for synth in all_synths.values():
        properties = {key: value for key, value in resource(synth)["Properties"].items()
                      if key != "ServiceToken"}
        # CloudFormation hands every property over as a string.
        as_sent = {key: str(value).lower() if isinstance(value, bool) else value
                   for key, value in properties.items()}
        parsed = MigrationProperties.parse(as_sent)
        assert parsed.target_heads == (HEAD,)
        assert parsed.migrate_on_deploy is synth.settings.migrate_on_deploy
        assert parsed.snapshot_target is not None


def test_crhelper_polling_and_own_stack_status_are_allowed_narrowly(dev: Synth) -> None:
    granted = by_action(statements_of_role(dev, "MigrationRole"))
    rules = "arn:<AWS::Partition>:events:eu-west-1:123456789012:rule/DatabaseMigration*"
    for action in ("events:PutRule", "events:PutTargets", "events:RemoveTargets",
                   "events:DeleteRule"):
        assert granted[action] == [rules]
    for action in ("lambda:AddPermission", "lambda:RemovePermission"):
        assert granted[action] == ["<MigrationFunction6E05CD6E.Arn>"]
    assert granted["cloudformation:DescribeStacks"] == ["<AWS::StackId>"]
    assert granted["cloudformation:DescribeStackResource"] == ["<AWS::StackId>"]


def test_runs_after_its_permissions_and_the_database_stack(dev: Synth) -> None:
    custom = resource(dev)
    polling = [key for key in dev.resources("application", "AWS::IAM::Policy")
               if key.startswith("MigrationsPollingPolicy")]
    assert custom["DependsOn"] == polling
    # The database lives in the other stack: the application stack is deployed after it,
    # so the database (and the secret's attachment) are available before the resource runs.
    application = dev.composition.application.artifact_id
    database = dev.composition.database.artifact_id
    assert database in dev.manifest["artifacts"][application]["dependencies"]
