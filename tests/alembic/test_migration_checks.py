"""pytest-alembic's built-in checks, imported explicitly (its auto-collection breaks on pytest 9).

They run against a real, empty PostgreSQL database per test (``alembic_engine``):
one head, base -> head upgrades, the models match the migrated schema, and every revision
downgrades and upgrades again.
"""

from __future__ import annotations

from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]
