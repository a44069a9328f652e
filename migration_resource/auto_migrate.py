"""Auto-migrate on first request, the guide's original mode, done safely, for application Lambdas.

`ensure_schema` runs before a container serves its first request:

- AUTO_MIGRATE=true: a read-only status check, then, when the database is behind, the
  engine's migrate: under the same advisory lock as the deploy (whichever comes second waits
  and finds nothing to do), through the same change gate (STAGE=production refuses
  destructive revisions unless ALLOW_DESTRUCTIVE), recorded in the audit trail as actor
  `auto-migrate`. Tables without a history get the verified baseline, as in a deploy; an
  `inconsistent` database is never touched.
- otherwise: the status check only. A database behind the code is reported (a warning in the
  guide's words with the next step, and the SchemaBehind metric) and never changed.

Serving: the application serves only when the database is at its code's revision or ahead of
it (`up_to_date`; `ahead` after a rollback of the code, as migrations are additive and never
downgraded automatically: a warning names the newer revisions, an error when one of them was
destructive), or when only the bookkeeping disagrees (an applied revision's file was edited:
the schema is still the one this code expects, and the edit blocks migrations, not
requests). Otherwise (behind, no history, inconsistent, unreachable,
misconfigured) it answers 503 with `client_message()`: a clear refusal is easier to act on
than errors about missing tables in the middle of requests.

Nothing here raises: a failing check must not crash the application's import or cold start.
A decision to serve holds for the container's life. A refusal is checked again after
RECHECK_SECONDS, so the application recovers once the deploy or an operator has migrated;
after a migration this container attempted was refused or failed, those checks are read-only,
so that containers do not retry it (and fill the audit trail) every RECHECK_SECONDS.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migration_resource import observability
from migration_resource.audit import RunContext
from migration_resource.dsn import DatabaseUrlError, mask_text
from migration_resource.engine import (
    RUNBOOK,
    EngineError,
    MigrationEngine,
    MigrationFailed,
    Outcome,
)
from migration_resource.phases import Release
from migration_resource.revisions import ScriptsError
from migration_resource.settings import SettingsError
from migration_resource.states import CHECKSUM_MISMATCH, DatabaseState

if TYPE_CHECKING:
    from aws_lambda_powertools.metrics import EphemeralMetrics

logger = logging.getLogger(__name__)

RECHECK_SECONDS = 30.0
AUTO_MIGRATE = "auto-migrate"
CHECK = "check"
SERVING_STATES = frozenset({DatabaseState.UP_TO_DATE, DatabaseState.AHEAD})
BEHIND_STATES = frozenset({DatabaseState.EMPTY, DatabaseState.PENDING_MIGRATIONS})
# Error codes besides the engine's (refused, migration_failed, database_unavailable, ...).
SCHEMA_NOT_READY = "schema_not_ready"  # not migrated by this container: the check said why
CONFIGURATION = "configuration"
UNEXPECTED = "error"
MIGRATE_COMMAND = "python scripts/remote_admin.py --confirm run-migrations"


@dataclass(frozen=True)
class AutoMigrateResult:
    serve: bool  # whether the application may serve requests
    mode: str  # AUTO_MIGRATE (this check could migrate) or CHECK
    state: str | None  # the database state found; None when it could not be read
    message: str  # what was logged: the outcome, or the reason and the next step
    applied: tuple[str, ...] = ()  # revisions this container applied
    error: str | None = None  # why it does not serve (a code), None when it serves
    outcome: Outcome | None = None

    @property
    def schema_behind(self) -> bool:
        """The database was read, and its schema is not one this code can serve."""
        return not self.serve and self.state is not None

    def client_message(self) -> str:
        """Why requests are refused, fit for API callers: no revisions, commands or hosts."""
        if self.serve:
            return "The database schema is ready"
        if self.state is None:
            return "The database is unavailable; retry later"
        if self.state in BEHIND_STATES:
            return (f"The database schema is behind this version of the application (state: "
                    f"{self.state}); requests are refused until the migrations have run")
        return (f"The database schema is not ready for this version of the application "
                f"(state: {self.state}); requests are refused until an operator fixes it")


@dataclass
class _Container:
    result: AutoMigrateResult | None = None
    checked_at: float = 0.0
    may_migrate: bool = True


_container = _Container()
_lock = threading.Lock()  # concurrent first requests in one process check once


def ensure_schema(
    engine_factory: Callable[[], MigrationEngine],
    *,
    env: Mapping[str, str],
    metrics: EphemeralMetrics | None = None,
) -> AutoMigrateResult:
    """Make sure the schema fits this code, once per container (see the module docstring).

    `engine_factory` builds the engine (closed here) only when a check is due; `metrics`,
    when given, receives SchemaBehind and the migration metrics.
    """
    with _lock:
        cached = _container.result
        if cached is not None and (
            cached.serve or time.monotonic() - _container.checked_at < RECHECK_SECONDS
        ):
            return cached
        result = _check(engine_factory, env=env, may_migrate=_container.may_migrate,
                        metrics=metrics)
        if result.mode == AUTO_MIGRATE and result.error in ("refused", "migration_failed"):
            _container.may_migrate = False
        if not result.serve:
            level = logging.ERROR if result.state is None else logging.WARNING
            logger.log(level, "Auto-migration: not serving (%s); checking again in %.0f s",
                       result.error, RECHECK_SECONDS)
        if metrics is not None and result.state is not None:
            observability.record_schema_behind(metrics, result.schema_behind)
        _container.result = result
        _container.checked_at = time.monotonic()
        return result


def reset() -> None:
    """Forget this container's check (tests)."""
    global _container  # noqa: PLW0603
    with _lock:
        _container = _Container()


def _check(
    engine_factory: Callable[[], MigrationEngine],
    *,
    env: Mapping[str, str],
    may_migrate: bool,
    metrics: EphemeralMetrics | None,
) -> AutoMigrateResult:
    try:
        auto = _auto_migrate_enabled(env)
    except SettingsError as error:
        return _misconfigured(CHECK, error)
    mode = AUTO_MIGRATE if auto and may_migrate else CHECK
    engine: MigrationEngine | None = None
    try:
        engine = engine_factory()
        return _check_with(engine, mode=mode, auto=auto, metrics=metrics)
    except MigrationFailed as error:
        if metrics is not None:
            observability.record_failure(metrics)
        return AutoMigrateResult(
            serve=False, mode=mode, state=_state_of(error), message=str(error),
            applied=tuple(a.revision for a in error.applied), error=error.code,
        )
    except EngineError as error:
        # The engine has logged it: refused (state, gate or lock), database unavailable...
        if metrics is not None and mode == AUTO_MIGRATE and error.code == "refused":
            observability.record_failure(metrics)
        return AutoMigrateResult(serve=False, mode=mode, state=_state_of(error),
                                 message=str(error), error=error.code)
    except (SettingsError, DatabaseUrlError, ScriptsError) as error:
        return _misconfigured(mode, error)
    except Exception as error:
        message = f"Auto-migration failed unexpectedly: {mask_text(str(error))}"
        logger.exception(message)
        return AutoMigrateResult(serve=False, mode=mode, state=None, message=message,
                                 error=UNEXPECTED)
    finally:
        if engine is not None:
            engine.close()


def _check_with(
    engine: MigrationEngine, *, mode: str, auto: bool, metrics: EphemeralMetrics | None
) -> AutoMigrateResult:
    status = engine.status()
    classification = status.classification
    if classification.state in SERVING_STATES:
        return _serving(status, mode)
    if classification.cause == CHECKSUM_MISMATCH and classification.schema_compatible:
        return _serving_despite_bookkeeping(status, mode)
    if classification.state is DatabaseState.PENDING_MIGRATIONS and set(
        classification.pending
    ) <= engine.deferred_revisions():
        return _serving_with_deferred(status, mode)
    if mode == CHECK:
        why = ("AUTO_MIGRATE is off" if not auto
               else "an earlier auto-migration in this container did not complete")
        return _not_ready(status, mode, why)
    return _migrate(engine, status, metrics)


def _migrate(
    engine: MigrationEngine, status: Outcome, metrics: EphemeralMetrics | None
) -> AutoMigrateResult:
    state = status.classification.state
    # Only a database that never had a history gets the verified baseline: after a failed
    # baseline it is `inconsistent`, and replaying the history again would fail again.
    outcome = engine.migrate(
        fix_history=state is DatabaseState.TABLES_WITHOUT_MIGRATION_HISTORY,
        context=RunContext(actor="auto-migrate"),
        # An application container never contracts: it stops before the first contract
        # revision, which a deploy applies once the release that no longer needs it is live.
        release=Release(contains=None, refuse_after_contract=False),
    )
    if metrics is not None and (outcome.applied or outcome.baseline is not None):
        observability.record_outcome(metrics, outcome)
    return AutoMigrateResult(
        serve=True, mode=AUTO_MIGRATE, state=state.value, message=outcome.message,
        applied=tuple(a.revision for a in outcome.applied), outcome=outcome,
    )


def _serving(status: Outcome, mode: str) -> AutoMigrateResult:
    classification = status.classification
    state = classification.state
    if state is DatabaseState.UP_TO_DATE:
        message = "Auto-migration: Database is up to date"
        logger.info(message)
        return AutoMigrateResult(serve=True, mode=mode, state=state.value, message=message,
                                 outcome=status)
    newer = ", ".join(classification.newer) or "?"
    message = (f"Auto-migration: the database is ahead of this code (newer revisions: {newer}): "
               "serving; a database ahead of the code is never downgraded automatically")
    if classification.newer_destructive:
        # Louder: code written before a destructive revision may use what it removed.
        message += (f". The newer revisions {', '.join(classification.newer_destructive)} were "
                    "destructive: this code may use columns or tables they removed; check "
                    "the errors, and redeploy the newer release if there are any")
        logger.error(message)
    else:
        logger.warning(message)
    return AutoMigrateResult(serve=True, mode=mode, state=state.value, message=message,
                             outcome=status)


def _serving_with_deferred(status: Outcome, mode: str) -> AutoMigrateResult:
    """Only revisions a deploy left for the next release are pending: this code was released
    with them pending, so it does not need them."""
    pending = ", ".join(status.classification.pending)
    message = (f"Auto-migration: serving; {pending} wait for the next release (contract "
               "revisions a deploy deferred: the code being replaced may still use what they "
               "remove)")
    logger.info(message)
    return AutoMigrateResult(serve=True, mode=mode, state=status.classification.state.value,
                             message=message, outcome=status)


def _serving_despite_bookkeeping(status: Outcome, mode: str) -> AutoMigrateResult:
    """An edited applied revision: the schema did not change, so this code can use it."""
    message = (f"Auto-migration: {status.message}: serving, as the schema is at this code's "
               "revision; the edit blocks migrations until it is resolved (see "
               f"{RUNBOOK}#checksum-mismatch-revision-x-was-edited-after-it-was-applied)")
    logger.warning(message)
    return AutoMigrateResult(serve=True, mode=mode, state=status.classification.state.value,
                             message=message, outcome=status)


def _not_ready(status: Outcome, mode: str, why: str) -> AutoMigrateResult:
    state = status.classification.state
    if state in BEHIND_STATES:
        problem = "the database schema is behind this code"
        next_step = f"deploy the stack (it runs the migrations) or run `{MIGRATE_COMMAND}`"
    elif state is DatabaseState.TABLES_WITHOUT_MIGRATION_HISTORY:
        problem = "the tables have no migration history"
        next_step = f"establish it with `{MIGRATE_COMMAND} --fix-history`"
    else:
        problem = "the migration history needs a manual fix"
        next_step = (f"see {RUNBOOK}#inconsistent (`python scripts/remote_admin.py status` "
                     "shows the details)")
    message = (f"{status.message}. Auto-migration: {problem} and {why}, so nothing was changed; "
               f"requests are refused until it is fixed. Next step: {next_step}")
    logger.warning(message)
    return AutoMigrateResult(serve=False, mode=mode, state=state.value, message=message,
                             error=SCHEMA_NOT_READY, outcome=status)


def _misconfigured(mode: str, error: Exception) -> AutoMigrateResult:
    message = f"Auto-migration cannot check the database: {mask_text(str(error))}"
    logger.error(message)
    return AutoMigrateResult(serve=False, mode=mode, state=None, message=message,
                             error=CONFIGURATION)


def _auto_migrate_enabled(env: Mapping[str, str]) -> bool:
    raw = env.get("AUTO_MIGRATE", "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise SettingsError(f"AUTO_MIGRATE={raw!r} must be true or false")


def _state_of(error: EngineError) -> str | None:
    return error.classification.state.value if error.classification is not None else None
