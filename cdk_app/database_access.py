"""What a function may do with a database it migrates or reads, scoped from its identifier.

The database may be created by this app (in another stack) or exist already: every grant
is built from the identifier and the stack's account and region, never from a reference to
the database's resource, so granting changes nothing in the database's own stack.

| grant | actions | resources |
|---|---|---|
| `grant_secret_read` | `secretsmanager:GetSecretValue` | the database's secret |
| `grant_pre_migration_snapshot`, instance | `rds:CreateDBSnapshot`, `rds:DescribeDBSnapshots` | the instance, `snapshot:premigrate-*` |
| | `rds:AddTagsToResource` | `snapshot:premigrate-*` |
| | `rds:DescribeDBInstances` | the instance |
| `grant_pre_migration_snapshot`, cluster | the `DBCluster` counterparts | the cluster, `cluster-snapshot:premigrate-*` |
"""  # noqa: E501 - a table

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from cdk_app.nag import Checks, nag_arn
from migration_resource.snapshots import SNAPSHOT_PREFIX


def database_arn(stack: Stack, *, cluster: bool, identifier: str) -> str:
    """`arn:...:rds:REGION:ACCOUNT:db:IDENTIFIER` (or `:cluster:`) in `stack`'s account."""
    return stack.format_arn(service="rds", resource="cluster" if cluster else "db",
                            resource_name=identifier,
                            arn_format=ArnFormat.COLON_RESOURCE_NAME)


def snapshot_resource(*, cluster: bool) -> str:
    """`snapshot:premigrate-*` or `cluster-snapshot:premigrate-*`."""
    kind = "cluster-snapshot" if cluster else "snapshot"
    return f"{kind}:{SNAPSHOT_PREFIX}*"


def snapshot_arn_pattern(stack: Stack, *, cluster: bool) -> str:
    resource, name = snapshot_resource(cluster=cluster).split(":", 1)
    return stack.format_arn(service="rds", resource=resource, resource_name=name,
                            arn_format=ArnFormat.COLON_RESOURCE_NAME)


def grant_secret_read(grantee: iam.IGrantable, secret: secretsmanager.ISecret) -> None:
    """secretsmanager:GetSecretValue on the database's secret, nothing else."""
    grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
        actions=["secretsmanager:GetSecretValue"], resources=[secret.secret_arn]))


def grant_pre_migration_snapshot(
    grantee: iam.IGrantable, stack: Stack, *, cluster: bool, identifier: str,
) -> None:
    """Create, tag and watch `premigrate-*` snapshots of the database, and read its status.

    Each action is limited to the resources its API checks: the database's own ARN and the
    snapshot-name prefix the handler uses (`migration_resource.snapshots`).
    """
    database = database_arn(stack, cluster=cluster, identifier=identifier)
    snapshots = snapshot_arn_pattern(stack, cluster=cluster)
    if cluster:
        create, describe_db, describe_snapshots = (
            "rds:CreateDBClusterSnapshot", "rds:DescribeDBClusters",
            "rds:DescribeDBClusterSnapshots")
    else:
        create, describe_db, describe_snapshots = (
            "rds:CreateDBSnapshot", "rds:DescribeDBInstances", "rds:DescribeDBSnapshots")
    policy = grantee.grant_principal
    policy.add_to_principal_policy(iam.PolicyStatement(
        sid="PreMigrationSnapshot", actions=[create], resources=[database, snapshots]))
    if isinstance(policy, Construct):
        Checks(policy).acknowledge(
            id="AwsSolutions-IAM5[Resource::"
               f"{nag_arn(stack, 'rds', snapshot_resource(cluster=cluster))}]",
            reason="Pre-migration snapshots are named premigrate-<stack>-<revision>-<time> "
                   "(migration_resource/snapshots.py); the statements allow only that "
                   "prefix, and creating one only from this database.")
    policy.add_to_principal_policy(iam.PolicyStatement(
        sid="TagPreMigrationSnapshot", actions=["rds:AddTagsToResource"],
        resources=[snapshots]))
    policy.add_to_principal_policy(iam.PolicyStatement(
        sid="DatabaseStatus", actions=[describe_db], resources=[database]))
    # RDS authorizes a snapshot's description against the snapshot and its source.
    policy.add_to_principal_policy(iam.PolicyStatement(
        sid="PreMigrationSnapshotStatus", actions=[describe_snapshots],
        resources=[database, snapshots]))
