"""How the revisions are run, for both Alembic environments that run them.

The engine's own environment (`env.py` here) and the repository's `alembic/env.py` (the
`alembic` CLI, pytest-alembic) must run revisions alike: one transaction per revision, the
engine's per-revision callback, the same tables left out of comparisons. They take their
`context.configure` options from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from migration_resource.table_filter import application_tables_only


def offline_options(attributes: Mapping[str, Any], metadata: sa.MetaData) -> dict[str, Any]:
    """`--sql` rendering: literal values, one transaction per revision."""
    return {
        "target_metadata": metadata,
        "literal_binds": True,
        "dialect_opts": {"paramstyle": "named"},
        "transaction_per_migration": True,
        # The engine's dry run splits the rendered SQL per revision at this callback.
        "on_version_apply": attributes.get("on_version_apply"),
    }


def online_options(attributes: Mapping[str, Any], metadata: sa.MetaData) -> dict[str, Any]:
    """A run on a connection (`attributes`: the Config's `attributes`)."""
    return {
        "target_metadata": metadata,
        # One transaction per revision: a failure leaves the database at the last revision
        # that completed, and alembic_version says which one that is.
        "transaction_per_migration": True,
        "compare_type": True,
        "compare_server_default": False,
        "on_version_apply": attributes.get("on_version_apply"),
        "include_object": application_tables_only(attributes.get("ignored_tables", ())),
    }
