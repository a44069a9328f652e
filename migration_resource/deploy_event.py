"""What a CloudFormation event for `Custom::DatabaseMigration` says, and the answer to one
that changes nothing, without crhelper.

A no-change deploy (the database already at the template's target revision) is the common
Update: its answer needs one query, not crhelper's lifecycle, and this module lets the
handler give it without importing crhelper or the AWS SDK (a third of a cold start). Any
other event goes to `custom_resource.MigrationResource`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migration_resource.snapshots import SnapshotError, SnapshotTarget

REQUIRED_EVENT_KEYS = ("RequestType", "ResponseURL", "StackId", "RequestId", "LogicalResourceId")
REQUEST_TYPES = ("Create", "Update", "Delete")
MAX_PROPERTY_LENGTH = 256
STAGE_ALIASES = {"dev": "development", "prod": "production",
                 "development": "development", "production": "production"}


class PropertyError(ValueError):
    """The resource's properties are malformed; the message names the property."""


@dataclass(frozen=True)
class MigrationProperties:
    target_revision: str
    history_digest: str | None
    snapshot_before_migrate: bool
    allow_destructive: bool
    stage: str
    snapshot_target: SnapshotTarget | None
    # False (stage setting migrateOnDeploy): Create/Update only report the state.
    migrate_on_deploy: bool = True

    @classmethod
    def parse(cls, properties: Mapping[str, Any]) -> MigrationProperties:
        def text(name: str, default: str | None = None) -> str | None:
            value = properties.get(name, default)
            if value is None:
                return None
            if not isinstance(value, str):
                raise PropertyError(f"{name} must be a string, got {type(value).__name__}")
            if len(value) > MAX_PROPERTY_LENGTH:
                raise PropertyError(f"{name} is {len(value)} characters long (at most "
                                    f"{MAX_PROPERTY_LENGTH})")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = properties.get(name, default)
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.lower() in ("true", "false"):
                return raw.lower() == "true"
            raise PropertyError(f"{name} must be true or false, got {str(raw)[:40]!r}")

        stage_raw = text("Stage", "development") or "development"
        if stage_raw not in STAGE_ALIASES:
            raise PropertyError(f"Stage must be development or production, got {stage_raw[:40]!r}")
        has_target = "DbInstanceIdentifier" in properties or "DbClusterIdentifier" in properties
        try:
            target = SnapshotTarget.from_properties(properties) if has_target else None
        except (SnapshotError, ValueError) as error:
            raise PropertyError(str(error)) from None
        snapshot_wanted = flag("SnapshotBeforeMigrate", True)
        if snapshot_wanted and target is None:
            raise PropertyError("SnapshotBeforeMigrate needs DbInstanceIdentifier or "
                                "DbClusterIdentifier")
        return cls(
            target_revision=text("TargetRevision", "head") or "head",
            history_digest=text("HistoryDigest"),
            snapshot_before_migrate=snapshot_wanted,
            allow_destructive=flag("AllowDestructive", False),
            stage=STAGE_ALIASES[stage_raw],
            snapshot_target=target,
            # Absent from templates synthesized before the setting existed: migrate, as then.
            migrate_on_deploy=flag("MigrateOnDeploy", True),
        )

    @property
    def target_heads(self) -> tuple[str, ...] | None:
        return None if self.target_revision in ("head", "heads") else (self.target_revision,)


def malformed_event_problem(event: Any) -> str | None:
    """Why a CloudFormation event cannot be handled, or None when it can."""
    if not isinstance(event, Mapping):
        return "the event is not a JSON object"
    missing = [key for key in REQUIRED_EVENT_KEYS if not isinstance(event.get(key), str)]
    if missing:
        return f"the event lacks {', '.join(missing)}"
    if event["RequestType"] not in REQUEST_TYPES:
        return f"RequestType {str(event['RequestType'])[:40]!r} is not Create, Update or Delete"
    if not isinstance(event.get("ResourceProperties", {}), Mapping):
        return "ResourceProperties must be an object"
    return None


def stack_name(event: Mapping[str, Any]) -> str:
    """The stack's name from its id (arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/uuid):
    part of the resource's stable PhysicalResourceId, whoever answers."""
    stack_id = str(event.get("StackId", ""))
    parts = stack_id.split("/")
    return parts[1] if len(parts) > 2 else stack_id or "stack"
