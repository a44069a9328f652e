"""Alarms on the migrations, the migration Lambda and the database, to one SNS topic.

| alarm | condition |
|---|---|
| MigrationFailed | a migration run failed (sum >= 1 in 5 minutes) |
| MigrationSlow | a migration run took longer than the guide's 5 minutes (max > 300 s) |
| DatabaseConnectionErrors | >= 3 failed connection attempts in 5 minutes (one run's retries) |
| MigrationFunctionErrors | the migration Lambda raised (sum >= 1) |
| MigrationFunctionThrottles | an invocation was refused (it runs one at a time) |
| DatabaseCpuHigh | CPU > 80 % for 15 minutes |
| DatabaseFreeStorageLow | free storage below the database's threshold (10 % of the volume) |

Missing data is "not breaching": no migration run means nothing to report. The alarms
notify the given topic, or one of their own: encrypted with its own KMS key (CloudWatch may
use it), TLS only, mailing the optional `alarm_email` (the stage's `alarmEmail`).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from cdk_app.metrics import MigrationMetrics

SLOW_MIGRATION_SECONDS = 300  # the guide's MIGRATION_TIMEOUT: 5 minutes
CONNECTION_ERRORS_THRESHOLD = 3
CPU_PERCENT = 80


class MigrationAlarms(Construct):
    def __init__(
        self, scope: Construct, id_: str, *, metrics: MigrationMetrics,
        free_storage_threshold_bytes: int, alarm_email: str | None, name_prefix: str,
        topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, id_)
        # The key of the topic created here; None when the alarms notify a given topic.
        self.key: kms.Key | None = None
        self.topic = self._own_topic(alarm_email, name_prefix) if topic is None else topic

        def alarm(id_: str, metric: cloudwatch.IMetric, threshold: float, description: str,
                  *, comparison: cloudwatch.ComparisonOperator =
                  cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                  periods: int = 1) -> cloudwatch.Alarm:
            created = cloudwatch.Alarm(
                self, id_, metric=metric, threshold=threshold, evaluation_periods=periods,
                datapoints_to_alarm=periods, comparison_operator=comparison,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            created.add_alarm_action(actions.SnsAction(self.topic))
            created.add_ok_action(actions.SnsAction(self.topic))
            return created

        self.alarms = {
            "MigrationFailed": alarm(
                "MigrationFailed", metrics.failed, 1,
                "A database migration failed. The deploy's CloudFormation event holds the "
                "reason; see docs/RUNBOOK.md."),
            "MigrationSlow": alarm(
                "MigrationSlow", metrics.duration_seconds, SLOW_MIGRATION_SECONDS,
                "A database migration ran longer than 5 minutes.",
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD),
            "DatabaseConnectionErrors": alarm(
                "DatabaseConnectionErrors", metrics.connection_errors,
                CONNECTION_ERRORS_THRESHOLD,
                "The Lambdas could not connect to the database (network, security group, "
                "secret or a stopped database)."),
            "MigrationFunctionErrors": alarm(
                "MigrationFunctionErrors", metrics.function_errors, 1,
                "The migration Lambda raised an error; see its log group."),
            "MigrationFunctionThrottles": alarm(
                "MigrationFunctionThrottles", metrics.function_throttles, 1,
                "The migration Lambda refused an invocation: it runs one at a time (a second "
                "deploy or admin command at once)."),
            "DatabaseCpuHigh": alarm(
                "DatabaseCpuHigh", metrics.database_cpu, CPU_PERCENT,
                "Database CPU above 80 % for 15 minutes.",
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD, periods=3),
            "DatabaseFreeStorageLow": alarm(
                "DatabaseFreeStorageLow", metrics.database_free_storage,
                free_storage_threshold_bytes,
                "Database free storage is low.",
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD),
        }

    def _own_topic(self, alarm_email: str | None, name_prefix: str) -> sns.ITopic:
        key = self.key = kms.Key(
            self, "TopicKey", enable_key_rotation=True,
            description=f"{name_prefix}: encrypts the alarm topic",
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        # CloudWatch alarms publish to an encrypted topic only if they may use its key.
        key.add_to_resource_policy(iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            resources=["*"],  # in a key policy, "*" is this key
        ))
        topic = sns.Topic(self, "Topic", display_name=f"{name_prefix} alarms",
                          master_key=key, enforce_ssl=True)
        if alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        return topic
