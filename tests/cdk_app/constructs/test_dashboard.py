"""Dashboard: migration metrics and database metrics side by side."""

from __future__ import annotations

import json
from typing import Any

from migration_resource import metric_names as names
from tests.cdk_app.support import Synth


def body(synth: Synth) -> dict[str, Any]:
    dashboard = synth.one("application", "AWS::CloudWatch::Dashboard")["Properties"]
    parts = dashboard["DashboardBody"]["Fn::Join"][1]
    text = "".join(part if isinstance(part, str) else "TOKEN" for part in parts)
    return json.loads(text)  # type: ignore[no-any-return]


def test_migration_metrics_left_database_metrics_right(dev: Synth) -> None:
    widgets = body(dev)["widgets"]
    graphs = [w for w in widgets if w["type"] == "metric" and "metrics" in w["properties"]]
    rows: dict[int, list[dict[str, Any]]] = {}
    for widget in graphs:
        rows.setdefault(widget["y"], []).append(widget)
    side_by_side = [sorted(row, key=lambda w: w["x"]) for row in rows.values() if len(row) == 2]
    assert len(side_by_side) >= 3
    for left, right in side_by_side:
        assert left["x"] == 0 and right["x"] == 12
        assert "Database" in right["properties"]["title"]
    text = json.dumps(widgets)
    for metric in (names.MIGRATION_DURATION_SECONDS, names.MIGRATION_FAILED,
                   names.MIGRATIONS_APPLIED, names.SNAPSHOT_DURATION_SECONDS,
                   names.DATABASE_CONNECTION_ERRORS, "CPUUtilization", "FreeStorageSpace",
                   "DatabaseConnections"):
        assert metric in text, metric


def test_dashboard_has_an_alarm_status_row_and_a_name(dev: Synth) -> None:
    dashboard = dev.one("application", "AWS::CloudWatch::Dashboard")["Properties"]
    assert dashboard["DashboardName"] == "DbMigrations-dev-Application-migrations"
    assert any(w["type"] == "alarm" for w in body(dev)["widgets"])
