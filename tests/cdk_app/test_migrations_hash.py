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


def test_editing_a_migration_changes_migrations_hash_and_nothing_else(tmp_path: Path) -> None:
    # GIVEN a copy of the project, synthesized (bundling skipped: only templates matter)
    root = project_copy(tmp_path)
    before = synthesize("prod", outdir=tmp_path / "before", bundling=False, project_root=root)
    # WHEN one existing revision file is edited (no new revision)
    revision = sorted((root / "alembic" / "versions").glob("*.py"))[2]
    revision.write_text(revision.read_text() + "\n# a comment added after review\n")
    after = synthesize("prod", outdir=tmp_path / "after", bundling=False, project_root=root)

    # THEN the database stack is byte-for-byte the same: a migration never touches it
    assert before.templates["database"] == after.templates["database"]
    # AND in the application stack only these change:
    changed = differences(before.templates["application"], after.templates["application"])
    functions = [key for key, value in before.templates["application"]["Resources"].items()
                 if value["Type"] == "AWS::Lambda::Function"]
    assert sorted(changed) == sorted([
        # what makes CloudFormation send the Update
        f"/Resources/{LOGICAL_ID}/Properties/MigrationsHash",
        # by definition the digest of the revision files: the engine compares it with the
        # checksums recorded when they were applied, so an edited applied file is refused
        f"/Resources/{LOGICAL_ID}/Properties/HistoryDigest",
        # the bundle holds the edited file, so both functions get the new code
        *(f"/Resources/{key}/Properties/Code/S3Key" for key in functions),
    ])
    old = before.templates["application"]["Resources"][LOGICAL_ID]["Properties"]
    new = after.templates["application"]["Resources"][LOGICAL_ID]["Properties"]
    assert old["TargetRevision"] == new["TargetRevision"]
    assert old["MigrationsHash"] != new["MigrationsHash"]


def test_migrations_hash_covers_versions_env_and_engine_only(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    seen = {migrations_hash(root)}
    for path in (root / "alembic" / "env.py", root / "migration_resource" / "engine.py",
                 next((root / "alembic" / "versions").glob("*.py"))):
        path.write_text(path.read_text() + "\n# edit\n")
        seen.add(migrations_hash(root))
    assert len(seen) == 4
    # the sample app's handler is not part of what a migration run does
    handler = root / "sample_app" / "handler.py"
    handler.write_text(handler.read_text() + "\n# edit\n")
    assert migrations_hash(root) in seen
    assert json.dumps(sorted(seen))  # hex strings
