"""Read what a database holds that matters for migrations: its tables and alembic_version."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from migration_resource.audit import AUDIT_TABLE, AuditState, read_audit
from migration_resource.online import PROGRESS_TABLE

VERSION_TABLE = "alembic_version"
# Tables the product itself owns; they are never application tables. (The backfill helper's
# progress table exists only while a backfill is unfinished.)
PRODUCT_TABLES = frozenset({VERSION_TABLE, AUDIT_TABLE, PROGRESS_TABLE})

_TABLES = sa.text(
    """
    SELECT c.relname
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')
    ORDER BY c.relname
    """
)


@dataclass(frozen=True)
class DatabaseSnapshot:
    """What the database holds, as read in one transaction."""

    version_table_exists: bool
    version_rows: tuple[str, ...]  # sorted revision ids in alembic_version
    application_tables: tuple[str, ...]  # sorted, product and ignored tables left out
    audit: AuditState = field(default_factory=AuditState)


def read_versions(connection: sa.Connection, *, schema: str) -> tuple[str, ...]:
    """alembic_version alone, sorted, in one round trip: where a run ended. The table is
    there after any run (Alembic keeps it, empty, at base); were it gone, the full read
    below says so (none)."""
    quote = connection.dialect.identifier_preparer.quote
    try:
        result = connection.exec_driver_sql(
            f"SELECT version_num FROM {quote(schema)}.{quote(VERSION_TABLE)}")
        return tuple(sorted(str(row[0]) for row in result))
    except sa.exc.ProgrammingError:
        connection.rollback()
        return read_database(connection, schema=schema).version_rows


def read_database(
    connection: sa.Connection,
    *,
    schema: str,
    ignored_tables: tuple[str, ...] = (),
    with_checksums: bool = False,
) -> DatabaseSnapshot:
    """Tables, alembic_version and the audit trail's verdicts, in the caller's transaction.

    Recorded checksums are read only when asked: the no-change path does not need them.
    """
    tables = [row[0] for row in connection.execute(_TABLES, {"schema": schema})]
    version_table_exists = VERSION_TABLE in tables
    rows: tuple[str, ...] = ()
    if version_table_exists:
        quote = connection.dialect.identifier_preparer.quote
        result = connection.exec_driver_sql(
            f"SELECT version_num FROM {quote(schema)}.{quote(VERSION_TABLE)}"
        )
        rows = tuple(sorted(str(row[0]) for row in result))
    skipped = PRODUCT_TABLES | set(ignored_tables)
    return DatabaseSnapshot(
        version_table_exists=version_table_exists,
        version_rows=rows,
        application_tables=tuple(t for t in tables if t not in skipped),
        audit=read_audit(
            connection, schema, exists=AUDIT_TABLE in tables, with_checksums=with_checksums
        ),
    )
