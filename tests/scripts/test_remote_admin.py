"""The local CLI end to end, as an operator runs it (a real process, a real database)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from localdev.history_env import write_script_directory
from tests.alembic.support import ADD_DISPLAY_NAME, ALL_REVISIONS, HEAD, REPO_ROOT
from tests.migration_resource.support import (
    execute,
    relations,
    sample_without_approvals,
    version_rows,
)

CLI = REPO_ROOT / "scripts" / "remote_admin.py"


def run_cli(
    *args: str, database_url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url:
        environment["DATABASE_URL"] = database_url
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(CLI), *args], capture_output=True, text=True, env=environment,
        cwd="/", timeout=120, check=False,
    )


def test_status_then_run_with_confirm(database_url: str, db: sa.Engine) -> None:
    status = run_cli("status", database_url=database_url)
    assert status.returncode == 0, status.stderr
    assert f"Migration state: empty ({ALL_REVISIONS} pending" in status.stdout
    assert "INFO - Migration state: empty" in status.stderr

    run = run_cli("--confirm", "run-migrations", database_url=database_url)
    assert run.returncode == 0, run.stderr
    assert f"Database migrations completed successfully. Revision: base → {HEAD}" in (
        run.stdout
    )
    assert f"INFO - Running {ALL_REVISIONS} pending migrations..." in run.stderr
    assert version_rows(db) == [HEAD]

    again = run_cli("run-migrations", "--confirm", database_url=database_url)
    assert again.returncode == 0
    assert "Auto-migration: Database is up to date" in again.stdout


def test_change_without_confirm_is_a_usage_error(database_url: str, db: sa.Engine) -> None:
    result = run_cli("run-migrations", database_url=database_url)
    assert result.returncode == 2
    assert "--confirm" in result.stderr
    assert relations(db) == []


def test_dry_run_prints_sql_and_changes_nothing(database_url: str, db: sa.Engine) -> None:
    result = run_cli("run-migrations", "--dry-run", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    assert "-- SQL of revision" in result.stdout and "CREATE TABLE users" in result.stdout
    assert relations(db) == []


def test_json_answer_and_target_revision(database_url: str, db: sa.Engine) -> None:
    result = run_cli(
        "--json", "--confirm", "run-migrations", "--target-revision", ADD_DISPLAY_NAME,
        database_url=database_url,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] is True and answer["final"] == [ADD_DISPLAY_NAME]
    assert {"ok", "state", "current", "target", "pending", "message"} <= set(answer)
    assert version_rows(db) == [ADD_DISPLAY_NAME]


def test_refusals_exit_1_with_the_reason_on_stderr(database_url: str, db: sa.Engine) -> None:
    run_cli("--confirm", "run-migrations", database_url=database_url)
    execute(db, "UPDATE alembic_version SET version_num = 'f00d'")
    result = run_cli("--confirm", "run-migrations", database_url=database_url)
    assert result.returncode == 1
    assert "inconsistent: alembic_version holds 'f00d'" in result.stderr
    assert result.stdout == ""
    bad = run_cli(
        "status", "--target-revision", "x'; drop table users;--", database_url=database_url
    )
    assert bad.returncode == 1 and "is not a revision id" in bad.stderr


def test_missing_database_url_is_a_usage_error() -> None:
    result = run_cli("status")
    assert result.returncode == 2
    assert "DATABASE_URL is not set" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    assert run_cli("explode").returncode == 2


def test_downgrade_needs_confirm(database_url: str, db: sa.Engine) -> None:
    run_cli("--confirm", "run-migrations", database_url=database_url)
    refused = run_cli("downgrade", "--target-revision", ADD_DISPLAY_NAME, database_url=database_url)
    assert refused.returncode == 2
    assert version_rows(db) == [HEAD]
    done = run_cli("--confirm", "downgrade", "--target-revision", ADD_DISPLAY_NAME,
                   database_url=database_url)
    assert done.returncode == 0, done.stderr
    assert version_rows(db) == [ADD_DISPLAY_NAME]


def test_two_processes_at_once_apply_each_revision_exactly_once(
    database_url: str, db: sa.Engine, synthetic: Callable[..., tuple[Path, list[str]]]
) -> None:
    # GIVEN a slow history (each revision sleeps) and two operators starting at once
    folder, ids = synthetic(5, sleep_seconds=0.3)
    env = {"ALEMBIC_SCRIPT_LOCATION": str(folder), "DATABASE_URL": database_url}
    argv = [sys.executable, str(CLI), "--json", "--confirm", "run-migrations"]
    environment = {**os.environ, **env}
    processes = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=environment)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in processes]
    # THEN both succeed, one applied everything, the other found it done after the lock
    assert [p.returncode for p in processes] == [0, 0], [err for _, err in results]
    answers = [json.loads(out) for out, _ in results]
    applied = sorted(len(a["applied"]) for a in answers)
    assert applied == [0, 5]
    with db.connect() as conn:
        logged = conn.exec_driver_sql(
            "SELECT revision, count(*) FROM applied_log GROUP BY revision"
        ).all()
    assert sorted(logged) == sorted((i, 1) for i in ids)
    assert version_rows(db) == [ids[-1]]


def test_fix_history_history_and_the_production_gate_from_the_cli(
    database_url: str, db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN tables at the revision before the column drop (which nothing approves), without
    # history
    scripts = {"ALEMBIC_SCRIPT_LOCATION": str(sample_without_approvals(tmp_path / "s"))}
    run_cli("--confirm", "run-migrations", "--target-revision", "d5b0686155dc",
            database_url=database_url, env=scripts)
    execute(db, "DROP TABLE alembic_version")
    refused = run_cli("--confirm", "run-migrations", database_url=database_url, env=scripts)
    assert refused.returncode == 1 and "--fix-history" in refused.stderr
    # WHEN the history is fixed in production, the destructive head is refused before the
    # baseline is stamped: only the refusal's row in the existing trail is written
    fixed = run_cli("--stage", "production", "--confirm", "run-migrations", "--fix-history",
                    database_url=database_url, env=scripts)
    assert fixed.returncode == 1
    assert "drop_column" in fixed.stderr and "--allow-destructive" in fixed.stderr
    assert "nothing was changed but its row in migration_audit" in fixed.stderr
    assert version_rows(db) == []
    # AND allowed, it runs; history shows all of it
    allowed = run_cli("--stage", "production", "--confirm", "run-migrations", "--fix-history",
                      "--allow-destructive", database_url=database_url, env=scripts)
    assert allowed.returncode == 0, allowed.stderr
    history = run_cli("history", database_url=database_url)
    assert history.returncode == 0
    assert "baseline" in history.stdout and "refused" in history.stdout
    assert "succeeded" in history.stdout


def test_repair_needs_confirm_and_something_to_do(database_url: str) -> None:
    assert run_cli("repair", "--realign-checksums", database_url=database_url).returncode == 2
    nothing = run_cli("--confirm", "repair", database_url=database_url)
    assert nothing.returncode == 2 and "repair needs something to do" in nothing.stderr
    ok = run_cli("--confirm", "repair", "--realign-checksums", database_url=database_url)
    assert ok.returncode == 0 and "nothing needed repair" in ok.stdout


READS_THEN_RAISES = '''import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    {body}


def downgrade() -> None:
    pass
'''


def test_a_revision_that_raises_is_one_clear_line_and_its_traceback_goes_to_the_log(
    database_url: str, db: sa.Engine, tmp_path: Path
) -> None:
    # GIVEN a history whose second revision reads a row and then raises from Python code
    folder = write_script_directory(tmp_path / "history")
    bodies = {
        "a1": 'op.create_table("tenants", sa.Column("id", sa.Integer, primary_key=True))',
        "a2": 'row = op.get_bind().execute(sa.text("SELECT id FROM tenants")).fetchone()\n'
              '    if row is None:\n        raise LookupError("no default tenant")',
    }
    down = None
    for revision, body in bodies.items():
        (folder / "versions" / f"{revision}_step.py").write_text(
            READS_THEN_RAISES.format(revision=revision, down=down, body=body))
        down = revision
    log_file = tmp_path / "admin.log"
    env = {"ALEMBIC_SCRIPT_LOCATION": str(folder), "REMOTE_ADMIN_LOG": str(log_file)}
    # WHEN the operator previews, then runs the migrations
    preview = run_cli("run-migrations", "--dry-run", database_url=database_url, env=env)
    result = run_cli("--confirm", "run-migrations", database_url=database_url, env=env)
    # THEN the preview says which SQL was rendered and which one could not be tried
    assert preview.returncode == 0, preview.stderr
    assert "-- SQL of revision a1 (a1_step.py, rendered offline)" in preview.stdout
    assert "-- SQL of revision a2 (a2_step.py, not previewed)" in preview.stdout
    assert "LookupError: no default tenant" in preview.stdout
    # AND the run fails with one line naming the revision, its file, the error and the state
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + preview.stderr
    assert ("revision a2 (a2_step.py) failed after 1 of 2 revisions: LookupError: no default "
            "tenant. Committed before it in this run: a1") in result.stderr
    assert "The database is at revision a1" in result.stderr
    assert f"(traceback in {log_file})" in result.stderr
    assert 'raise LookupError("no default tenant")' in log_file.read_text()
    assert version_rows(db) == ["a1"]


def admin_module() -> Any:
    """scripts/remote_admin.py as a module, for its log-file helper."""
    spec = importlib.util.spec_from_file_location("remote_admin_cli", CLI)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_log_goes_to_the_users_own_state_folder_readable_by_them_alone(
    database_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_STATE_HOME": "", "REMOTE_ADMIN_LOG": ""}
    assert run_cli("status", database_url=database_url, env=env).returncode == 0
    log = home / ".local" / "state" / "db-migrations" / "remote_admin.log"
    assert log.is_file() and log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700


def test_a_log_path_someone_else_prepared_is_never_written(tmp_path: Path) -> None:
    admin = admin_module()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    # a link planted where the log goes: not followed, its target untouched
    target = tmp_path / "target.txt"
    target.write_text("keep\n")
    (private / "link.log").symlink_to(target)
    stream, why = admin.open_private_log(private / "link.log")
    assert stream is None and "link.log" in why and target.read_text() == "keep\n"
    # a file another user created: refused
    foreign = private / "foreign.log"
    foreign.write_text("")
    os.chown(foreign, 65534, 65534)
    stream, why = admin.open_private_log(foreign)
    assert stream is None and "not a file of yours" in why
    # a folder others may write to: refused
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    stream, why = admin.open_private_log(shared / "remote_admin.log")
    assert stream is None and "only you can write to" in why
    # a file of ours readable by others is made private
    ours = private / "ours.log"
    ours.write_text("")
    ours.chmod(0o644)
    stream, why = admin.open_private_log(ours)
    assert stream is not None and why == ""
    stream.close()
    assert stat.S_IMODE(ours.stat().st_mode) == 0o600
