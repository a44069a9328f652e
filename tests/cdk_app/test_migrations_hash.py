"""Editing a migration file changes MigrationsHash (so CloudFormation sends an Update), and
nothing else but what must follow from the edit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cdk_app.bundling import migrations_hash
from cdk_app.constructs.migration_custom_resource import LOGICAL_ID
from tests.cdk_app.support import project_copy, synthesize


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [found for key in sorted(set(old) | set(new))
                for found in differences(old.get(key), new.get(key), f"{path}/{key}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [found for index, (a, b) in enumerate(zip(old, new, strict=True))
                for found in differences(a, b, f"{path}/{index}")]
    return [] if old == new else [path]


def application_changes(tmp_path: Path, edit: Any) -> tuple[list[str], list[str], Any]:
    """Synthesize a project copy before and after `edit(revision_file)`; what changed."""
    root = project_copy(tmp_path)
    before = synthesize("prod", outdir=tmp_path / "before", bundling=False, project_root=root)
    revision = sorted((root / "alembic" / "versions").glob("*.py"))[2]
    edit(revision)
    after = synthesize("prod", outdir=tmp_path / "after", bundling=False, project_root=root)
    # a migration never touches the database stack
    assert before.templates["database"] == after.templates["database"]
    changed = differences(before.templates["application"], after.templates["application"])
    functions = [f"/Resources/{key}/Properties/Code/S3Key"
                 for key, value in before.templates["application"]["Resources"].items()
                 if value["Type"] == "AWS::Lambda::Function"]
    return changed, functions, (before, after)


def test_reformatting_a_migration_changes_migrations_hash_but_not_the_history_digest(
    tmp_path: Path,
) -> None:
    # WHEN one existing revision file gets a comment (no new revision, nothing it does)
    changed, functions, (before, after) = application_changes(
        tmp_path, lambda path: path.write_text(path.read_text() + "\n# reviewed\n"))
    # THEN CloudFormation sends an Update (the bundle holds the new file), but the digest of
    # what the revisions do is the same: the deploy finds the database up to date
    assert sorted(changed) == sorted([
        f"/Resources/{LOGICAL_ID}/Properties/MigrationsHash",
        # the application's bundle holds the revision files too: its release changed
        f"/Resources/{LOGICAL_ID}/Properties/ReleaseId", *functions,
    ])
    old = before.templates["application"]["Resources"][LOGICAL_ID]["Properties"]
    new = after.templates["application"]["Resources"][LOGICAL_ID]["Properties"]
    assert old["TargetRevision"] == new["TargetRevision"]
    assert old["MigrationsHash"] != new["MigrationsHash"]


def test_changing_a_statement_changes_the_history_digest_too(tmp_path: Path) -> None:
    def change(path: Path) -> None:
        text = path.read_text()
        assert "op.execute(" in text or "op.add_column(" in text or "op.create_" in text
        path.write_text(text.replace("def upgrade() -> None:\n",
                                     "def upgrade() -> None:\n    op.execute('SELECT 1')\n", 1))

    changed, functions, _ = application_changes(tmp_path, change)
    assert sorted(changed) == sorted([
        f"/Resources/{LOGICAL_ID}/Properties/MigrationsHash",
        # the digest of what the revisions do: the engine compares it with what was recorded
        # when they were applied, so an edited applied revision is refused
        f"/Resources/{LOGICAL_ID}/Properties/HistoryDigest",
        f"/Resources/{LOGICAL_ID}/Properties/ReleaseId",
        *functions,
    ])


def test_migrations_hash_covers_the_revisions_and_the_engine_only(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    seen = {migrations_hash(root)}
    for path in (root / "migration_resource" / "engine.py",
                 root / "migration_resource" / "alembic_env" / "env.py",
                 next((root / "alembic" / "versions").glob("*.py"))):
        path.write_text(path.read_text() + "\n# edit\n")
        seen.add(migrations_hash(root))
    assert len(seen) == 4
    # neither the sample app's handler nor the folder's own env.py is part of what a
    # migration run does (the engine runs its own environment)
    for path in (root / "sample_app" / "handler.py", root / "alembic" / "env.py"):
        path.write_text(path.read_text() + "\n# edit\n")
        assert migrations_hash(root) in seen
    assert json.dumps(sorted(seen))  # hex strings
