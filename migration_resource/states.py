"""The six database states. Their names are a contract: logs, answers, metrics and docs use them."""

from __future__ import annotations

from enum import StrEnum


class DatabaseState(StrEnum):
    EMPTY = "empty"
    TABLES_WITHOUT_MIGRATION_HISTORY = "tables_without_migration_history"
    PENDING_MIGRATIONS = "pending_migrations"
    UP_TO_DATE = "up_to_date"
    AHEAD = "ahead"
    INCONSISTENT = "inconsistent"


# Why a database is `inconsistent`; short machine-readable codes that answers carry next to the
# human sentence.
UNKNOWN_REVISION = "unknown_revision"
OVERLAPPING_REVISIONS = "overlapping_revisions"
DIVERGED = "diverged"
CHECKSUM_MISMATCH = "checksum_mismatch"
FAILED_RUN = "failed_run"
UNVERIFIABLE_BASELINE = "unverifiable_baseline"
# The tables match several revisions and a revision between them runs code that changes no
# schema (a data migration): whether it ran cannot be told from the tables.
AMBIGUOUS_BASELINE = "ambiguous_baseline"
