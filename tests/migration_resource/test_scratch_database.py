"""The scratch database a plan runs revision code in: made, dropped, and what a killed plan
left behind swept, never a database that only looks like one. Real PostgreSQL."""

from __future__ import annotations

import time

import sqlalchemy as sa

from migration_resource.scratch_database import PREFIX, created_at, scratch_database, scratch_name


def databases(db: sa.Engine) -> set[str]:
    with db.connect() as conn:
        return set(conn.exec_driver_sql("SELECT datname FROM pg_database").scalars())


def test_a_plan_sweeps_its_own_leftovers_and_nothing_that_only_looks_like_one(
    db: sa.Engine,
) -> None:
    # GIVEN a scratch database a killed plan left two hours ago, one a plan made a minute ago,
    # and a team's database whose name merely starts the same way
    old, recent = scratch_name(time.time() - 7200), scratch_name(time.time() - 60)
    theirs = f"{PREFIX}2024_results"
    admin = db.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in (old, recent, theirs):
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        # WHEN a plan makes (and drops) its own scratch database
        def connect_to(name: str) -> sa.Engine:
            return sa.create_engine(db.url.set(database=name), poolclass=sa.NullPool)

        with scratch_database(db, connect_to, extensions=(), schema="public") as scratch:
            made = scratch.url.database
            assert made in databases(db)
        # THEN only the old leftover of ours was swept, and its own is gone
        left = databases(db)
        assert old not in left and made not in left
        assert recent in left and theirs in left
        assert created_at(theirs) is None
    finally:
        with admin.connect() as conn:
            for name in (old, recent, theirs):
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
