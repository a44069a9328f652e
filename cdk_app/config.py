"""Stage settings: read once from cdk.json context into a frozen dataclass.

Configuration flows one way: cdk.json → app.py → stacks → constructs. Constructs never read
the environment. A missing or malformed setting fails synth with a message naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGE_KINDS = ("development", "production")


class ConfigError(ValueError):
    """A setting in cdk.json is missing or malformed; the message names it."""


@dataclass(frozen=True)
class StageSettings:
    name: str  # the key under "stages", chosen with `-c stage=NAME`
    kind: str  # "development" or "production": what the safety rules key on
    migration_timeout_seconds: int
    snapshot_before_migrate: bool
    allow_destructive: bool
    auto_migrate: bool


def file_context(project_root: Path) -> dict[str, Any]:
    """cdk.json's context plus the committed cdk.context.json lookups.

    The CDK CLI passes these itself; reading them here lets `python app.py` synthesize the
    same app without the CLI. Context given with `-c` still wins (the CLI's values are
    applied after these).
    """
    context: dict[str, Any] = dict(json.loads((project_root / "cdk.json").read_text())["context"])
    lookups = project_root / "cdk.context.json"
    if lookups.exists():
        context.update(json.loads(lookups.read_text()))
    return context


def load_stage_settings(context: Mapping[str, Any], stage: str | None) -> StageSettings:
    stages = context.get("stages")
    if not isinstance(stages, Mapping) or not stages:
        raise ConfigError("cdk.json context 'stages' is missing or empty")
    name = stage or context.get("defaultStage")
    if not isinstance(name, str) or name not in stages:
        raise ConfigError(
            f"stage {name!r} is not defined in cdk.json context 'stages' "
            f"(defined: {', '.join(sorted(stages))}); choose one with -c stage=NAME"
        )
    raw = stages[name]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"stages.{name} must be an object")

    def setting(key: str, kind: type) -> Any:
        if key not in raw:
            raise ConfigError(f"stages.{name}.{key} is missing")
        value = raw[key]
        if type(value) is not kind:
            raise ConfigError(
                f"stages.{name}.{key} must be {kind.__name__}, got {type(value).__name__}"
            )
        return value

    stage_kind = setting("kind", str)
    if stage_kind not in STAGE_KINDS:
        raise ConfigError(f"stages.{name}.kind must be one of {', '.join(STAGE_KINDS)}")
    timeout = setting("migrationTimeoutSeconds", int)
    if not 1 <= timeout <= 900:
        raise ConfigError(
            f"stages.{name}.migrationTimeoutSeconds must be 1..900 (a Lambda runs at most 900 s)"
        )
    return StageSettings(
        name=name,
        kind=stage_kind,
        migration_timeout_seconds=timeout,
        snapshot_before_migrate=setting("snapshotBeforeMigrate", bool),
        allow_destructive=setting("allowDestructive", bool),
        auto_migrate=setting("autoMigrate", bool),
    )
