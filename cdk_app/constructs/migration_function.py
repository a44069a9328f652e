"""The migration Lambda: `Custom::DatabaseMigration`'s handler and the admin endpoint.

Python 3.12, the migration bundle (cdk_app/bundling.py `MIGRATION_BUNDLE`), one run at a
time (reserved concurrency 1: two deploys, or a deploy and an admin command, queue instead of
racing to the advisory lock), timeout and memory from the stage settings, JSON logs and
embedded metrics through Powertools' environment variables, its own log group with a
retention.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk_app.bundling import MIGRATION_HANDLER
from cdk_app.lambda_function import FunctionNetwork, vpc_python_function

SERVICE_NAME = "db-migrations"


class MigrationFunction(Construct):
    def __init__(
        self, scope: Construct, id_: str, *, code: lambda_.Code, network: FunctionNetwork,
        database_secret_arn: str, stage_kind: str, environment: Mapping[str, str],
        timeout: Duration, memory_mb: int,
        log_retention: logs.RetentionDays, log_removal_policy: RemovalPolicy,
    ) -> None:
        """`environment`: the engine's settings (MIGRATION_TIMEOUT, ...) and the database's
        identifier (DB_INSTANCE_IDENTIFIER or DB_CLUSTER_IDENTIFIER)."""
        super().__init__(scope, id_)
        parts = vpc_python_function(
            self, code=code, network=network,
            handler=MIGRATION_HANDLER,
            description="Custom::DatabaseMigration and admin operations (remote_admin.py)",
            role_description="Migration Lambda: database secret, pre-migration snapshots, own "
                             "stack status, crhelper polling",
            service=SERVICE_NAME, database_secret_arn=database_secret_arn,
            stage_kind=stage_kind,
            environment=environment,
            timeout=timeout, memory_mb=memory_mb, reserved_concurrent_executions=1,
            log_retention=log_retention, log_removal_policy=log_removal_policy,
            runtime_reason="Python 3.12 on purpose: the bundle's wheels are built for cp312 "
                           "(cdk_app/bundling.py) and the suite import-tests it under 3.12.")
        self.log_group, self.role, self.function = parts.log_group, parts.role, parts.function
        # crhelper's poll rule invokes asynchronously; Lambda would retry a failed or
        # throttled invocation twice, replaying a stored event after its request was answered.
        self.function.configure_async_invoke(retry_attempts=0)
