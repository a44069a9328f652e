"""`Custom::DatabaseMigration`: CloudFormation invokes the migration Lambda directly.

No CDK Provider framework: crhelper in the Lambda answers CloudFormation itself, and polls
(an EventBridge rule re-invoking the function every minute) while a snapshot or a long
migration runs. The resource's `ServiceTimeout` bounds the whole wait.

Properties (read by `migration_resource.custom_resource.MigrationProperties`):
- `TargetRevision`: the scripts' head id, resolved at synth, so a diff shows `a1b2 → c3d4`;
- `HistoryDigest`: digest of the revision files, so a no-change deploy is one query;
- `MigrationsHash`: changes with any revision, env.py or engine file, forcing an Update;
- `SnapshotBeforeMigrate`, `AllowDestructive`, `Stage`;
- `MigrateOnDeploy`: false makes Create/Update only report the state (the escape hatch);
  flipping it changes a property, so CloudFormation sends an Update;
- `DbInstanceIdentifier` or `DbClusterIdentifier`: what to snapshot;
- `ReleaseId` (optional): changes with the application's code, so each release sends an
  Update even without a new revision: the live release (`OldResourceProperties`) is what lets
  a contract revision deferred by the release before it run now.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Aws, CfnResource, CustomResource, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk_app.nag import Checks, nag_arn

RESOURCE_TYPE = "Custom::DatabaseMigration"
# crhelper names its polling rule and permission statement LogicalResourceId + 8 random
# characters; a fixed logical id lets the policy name exactly those rules.
LOGICAL_ID = "DatabaseMigration"


@dataclass(frozen=True)
class MigrationProperties:
    target_revision: str
    history_digest: str
    migrations_hash: str
    snapshot_before_migrate: bool
    allow_destructive: bool
    migrate_on_deploy: bool
    stage_kind: str
    database_property: str  # DbInstanceIdentifier or DbClusterIdentifier
    database_identifier: str
    release_id: str | None = None


class MigrationCustomResource(Construct):
    def __init__(
        self, scope: Construct, id_: str, *, function: lambda_.Function,
        properties: MigrationProperties, service_timeout: Duration,
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.polling_policy = iam.Policy(self, "PollingPolicy", statements=[
            iam.PolicyStatement(
                sid="CrHelperPollingRule",
                actions=["events:PutRule", "events:PutTargets", "events:RemoveTargets",
                         "events:DeleteRule"],
                resources=[stack.format_arn(service="events", resource="rule",
                                            resource_name=f"{LOGICAL_ID}*")]),
            iam.PolicyStatement(
                sid="CrHelperPollingPermission",
                actions=["lambda:AddPermission", "lambda:RemovePermission"],
                resources=[function.function_arn]),
            iam.PolicyStatement(
                # DescribeStackResource: a poll first checks its request is still open.
                sid="OwnStackStatus",
                actions=["cloudformation:DescribeStacks", "cloudformation:DescribeStackResource"],
                resources=[Aws.STACK_ID]),
        ])
        # Its own policy, not the role's default one: the function depends on its role's
        # default policy, and this one names the function.
        assert function.role is not None
        self.polling_policy.attach_to_role(function.role)
        Checks(self.polling_policy).acknowledge(
            id=f"AwsSolutions-IAM5[Resource::{nag_arn(stack, 'events', f'rule/{LOGICAL_ID}*')}]",
            reason="crhelper creates its polling rule as LogicalResourceId + 8 random "
                   "characters; the statement allows only rules with this resource's prefix.")
        self.resource = CustomResource(
            self, "Resource",
            service_token=function.function_arn,
            resource_type=RESOURCE_TYPE,
            service_timeout=service_timeout,
            properties={
                "TargetRevision": properties.target_revision,
                "HistoryDigest": properties.history_digest,
                "MigrationsHash": properties.migrations_hash,
                "SnapshotBeforeMigrate": properties.snapshot_before_migrate,
                "AllowDestructive": properties.allow_destructive,
                "MigrateOnDeploy": properties.migrate_on_deploy,
                "Stage": properties.stage_kind,
                properties.database_property: properties.database_identifier,
                **({"ReleaseId": properties.release_id} if properties.release_id else {}),
            },
        )
        self.resource.node.add_dependency(self.polling_policy)
        default_child = self.resource.node.default_child
        assert isinstance(default_child, CfnResource)
        default_child.override_logical_id(LOGICAL_ID)

    def get_att(self, name: str) -> str:
        """A value of the Lambda's answer (`State`, `FromRevision`, `ToRevision`, ...)."""
        return self.resource.get_att_string(name)
