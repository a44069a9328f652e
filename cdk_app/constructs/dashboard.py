"""A CloudWatch dashboard: the migration metrics and the database's, side by side.

The applications that use the schema come last, one graph each (`add_application`): their
errors next to the schema-behind count their schema checks emit.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk_app.metrics import MigrationMetrics, application_errors

WIDTH = 12  # two columns of a 24-unit grid
HEIGHT = 6


class MigrationDashboard(Construct):
    def __init__(
        self, scope: Construct, id_: str, *, dashboard_name: str, metrics: MigrationMetrics,
        alarms: Sequence[cloudwatch.IAlarm],
    ) -> None:
        super().__init__(scope, id_)
        self._schema_behind = metrics.schema_behind
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=dashboard_name)
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=24,
                                         height=3))
        # Left column: migrations; right column: the database.
        self.dashboard.add_widgets(
            _graph("Migration runs", [metrics.succeeded, metrics.failed], [metrics.applied]),
            _graph("Database CPU (%)", [metrics.database_cpu]))
        self.dashboard.add_widgets(
            _graph("Migration and snapshot duration (s)",
                  [metrics.duration_seconds, metrics.snapshot_seconds]),
            _graph("Database connections", [metrics.database_connections],
                  [metrics.connection_errors]))
        self.dashboard.add_widgets(
            _graph("Migration Lambda", [metrics.function_errors, metrics.function_throttles],
                  [metrics.function_duration]),
            _graph("Database free storage (bytes)", [metrics.database_free_storage]))

    def add_application(self, function: lambda_.IFunction, *, label: str) -> None:
        """A row for one application function: its errors and the schema-behind count."""
        self.dashboard.add_widgets(
            _graph(f"{label}: errors and schema behind",
                   [application_errors(function), self._schema_behind]))

    @property
    def url(self) -> str:
        return (f"https://{Aws.REGION}.console.aws.amazon.com/cloudwatch/home?region="
                f"{Aws.REGION}#dashboards:name={self.dashboard.dashboard_name}")


def _graph(title: str, left: Sequence[cloudwatch.IMetric],
           right: Sequence[cloudwatch.IMetric] = ()) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(title=title, left=list(left), right=list(right),
                                  width=WIDTH, height=HEIGHT)
