"""CloudWatch metric names and dimensions: one contract for the Lambdas that emit them and the
CDK app that builds alarms and the dashboard on them. Constants only, so the CDK app can
import this without the Lambda runtime's dependencies.

Every metric below is emitted in NAMESPACE with the single dimension STAGE_DIMENSION
(`development` or `production`), except COLD_START, which Powertools emits with the
dimension `function_name`.
"""

from __future__ import annotations

NAMESPACE = "DatabaseMigrations"
STAGE_DIMENSION = "Stage"

# One value per migration run that changed (or tried to change) the schema.
MIGRATION_DURATION_SECONDS = "MigrationDurationSeconds"  # Seconds
# Both are emitted on every run, one as 1 and the other as 0, so the average of
# MigrationSucceeded is the success rate and the sum of MigrationFailed counts failures.
MIGRATION_SUCCEEDED = "MigrationSucceeded"  # Count
MIGRATION_FAILED = "MigrationFailed"  # Count
MIGRATIONS_APPLIED = "MigrationsApplied"  # Count: revisions applied by the run
SNAPSHOT_DURATION_SECONDS = "SnapshotDurationSeconds"  # Seconds: the pre-migration snapshot
DATABASE_CONNECTION_ERRORS = "DatabaseConnectionErrors"  # Count: failed connection attempts
COLD_START = "ColdStart"  # Count (Powertools), dimension function_name
# Application Lambdas (auto-migrate): 1 each time a container refuses requests because the
# database schema is not at (or ahead of) its code's revision, 0 when it serves.
SCHEMA_BEHIND = "SchemaBehind"  # Count
