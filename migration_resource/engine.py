"""The migration engine: one object the adapters hold, its commands in `commands/`.

It knows nothing of AWS: the Lambda handler and the CLIs hand it settings and read back
outcomes. Each method is one command (status, history, dry run, migrate, downgrade, repair)
over the shared core (connections, the migration lock, classification); the plan a dry run
shows is the plan the gate judges and the apply runs (`migration_resource.plan`).
"""

from __future__ import annotations

from migration_resource.audit import RunContext
from migration_resource.classification import Classification
from migration_resource.commands import deploy, inspect, migrate
from migration_resource.commands.deploy import DeployPlan, DeployRequest, PlannedDeploy
from migration_resource.core import RUNBOOK, EngineCore, create_database_engine
from migration_resource.outcomes import (
    ConfirmationRequired,
    DatabaseUnavailable,
    EngineError,
    MigrationFailed,
    MigrationRefused,
    Outcome,
    UsageError,
)
from migration_resource.phases import Release

__all__ = [
    "RUNBOOK",
    "ConfirmationRequired",
    "DatabaseUnavailable",
    "DeployPlan",
    "DeployRequest",
    "EngineError",
    "MigrationEngine",
    "MigrationFailed",
    "MigrationRefused",
    "Outcome",
    "PlannedDeploy",
    "Release",
    "RunContext",
    "UsageError",
    "create_database_engine",
]


class MigrationEngine(EngineCore):
    """The commands as methods, for adapters that keep one engine per run."""

    def status(
        self,
        target: str = "head",
        *,
        target_heads: tuple[str, ...] | None = None,
        history_digest: str | None = None,
        with_history: bool = True,
        with_phases: bool = False,
    ) -> Outcome:
        return inspect.status(self, target, target_heads=target_heads,
                              history_digest=history_digest, with_history=with_history,
                              with_phases=with_phases)

    def history(self, limit: int = 20) -> Outcome:
        return inspect.history(self, limit)

    def dry_run(
        self,
        target: str = "head",
        *,
        fix_history: bool = False,
        baseline: str | None = None,
        allow_destructive: bool = False,
    ) -> Outcome:
        # dry_run, downgrade and repair load with their first call: the deploy's no-change
        # path uses status and migrate's checks only.
        from migration_resource.commands import dry_run  # noqa: PLC0415

        return dry_run.dry_run(self, target, fix_history=fix_history, baseline=baseline,
                               allow_destructive=allow_destructive)

    def migrate(
        self,
        target: str = "head",
        *,
        target_heads: tuple[str, ...] | None = None,
        history_digest: str | None = None,
        fix_history: bool = False,
        baseline: str | None = None,
        allow_destructive: bool = False,
        context: RunContext | None = None,
        release: Release | None = None,
    ) -> Outcome:
        return migrate.migrate(
            self, target, target_heads=target_heads, history_digest=history_digest,
            fix_history=fix_history, baseline=baseline, allow_destructive=allow_destructive,
            context=context, release=release,
        )

    def plan_deploy(
        self, request: DeployRequest, *, context: RunContext | None = None
    ) -> PlannedDeploy:
        return deploy.plan_deploy(self, request, context=context)

    def apply_deploy(
        self, request: DeployRequest, plan: DeployPlan, *, context: RunContext | None = None
    ) -> Outcome:
        return deploy.apply_deploy(self, request, plan, context=context)

    def check_gate(
        self,
        classification: Classification,
        *,
        allow_destructive: bool = False,
        context: RunContext | None = None,
    ) -> None:
        migrate.check_gate(self, classification, allow_destructive=allow_destructive,
                           context=context)

    def downgrade(
        self, target: str, *, confirm: bool, context: RunContext | None = None
    ) -> Outcome:
        from migration_resource.commands import downgrade  # noqa: PLC0415 - see dry_run

        return downgrade.downgrade(self, target, confirm=confirm, context=context)

    def repair(
        self,
        *,
        confirm: bool,
        realign_checksums: bool = False,
        resolve: str | None = None,
        revision: str | None = None,
        context: RunContext | None = None,
    ) -> Outcome:
        from migration_resource.commands import repair  # noqa: PLC0415 - see dry_run

        return repair.repair(self, confirm=confirm, realign_checksums=realign_checksums,
                             resolve=resolve, revision=revision, context=context)
