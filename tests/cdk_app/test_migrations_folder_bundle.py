"""A team's own migrations folder in the bundle: its revision files are packed, its env.py is
not, and the template's TargetRevision, HistoryDigest and MigrationsHash come from it.

The bundle's layout is proven by running the engine from a copy of the bundled sources (the
packages pip would install come from the test's environment) on the real test PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa

from cdk_app import bundling
from migration_resource import checksums
from migration_resource.checksums import history_digest
from tests.cdk_app.support import project_copy
from tests.migration_resource.team_folder import (
    CONVENTION_NAMES,
    FLASK_CONVENTION,
    flask_migrate_folder,
    names,
)

FLASK_HEAD = "b2e1d4c6f8a0"


def test_the_bundle_packs_the_folder_revision_files_and_not_its_env_py(tmp_path: Path) -> None:
    # GIVEN a project and a Flask-Migrate folder of the team's
    root = project_copy(tmp_path)
    folder = flask_migrate_folder(root)
    # WHEN the migration bundle's sources are listed
    sources = dict((target, source) for source, target in bundling.bundle_sources(
        root, bundling.MIGRATION_BUNDLE, migrations=folder))
    # THEN the revision files are in migrations/versions/, and nothing else of the folder
    packed = sorted(target for target in sources if target.startswith("migrations/"))
    assert packed == ["migrations/versions/a1f0c3d5e7b9_users.py",
                      "migrations/versions/b2e1d4c6f8a0_posts.py"]
    assert "migration_resource/alembic_env/env.py" in sources
    assert not any(target.startswith(("sample_app/", "alembic/")) for target in sources)
    # AND a package MIGRATION_METADATA imports can be added to the bundle
    with_models = bundling.MIGRATION_BUNDLE.including("sample_app")
    assert "sample_app/models.py" in dict(
        (t, s) for s, t in bundling.bundle_sources(root, with_models, migrations=folder))
    assert bundling.bundle_fingerprint(root, with_models, migrations=folder) != (
        bundling.bundle_fingerprint(root, migrations=folder))


def test_template_properties_come_from_the_folder(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    folder = flask_migrate_folder(root)
    assert bundling.target_revision(root, migrations=folder) == FLASK_HEAD
    assert bundling.scripts_history_digest(root, migrations=folder) == history_digest(
        folder / "versions")
    # a path relative to the project is the same folder
    relative = Path("migrations")
    assert bundling.migrations_hash(root, migrations=relative) == bundling.migrations_hash(
        root, migrations=folder)
    assert bundling.target_revision(root, migrations=relative) == FLASK_HEAD
    # the default is still the repository's own alembic/
    assert bundling.migrations_hash(root) == bundling.migrations_hash(
        root, migrations=root / "alembic")
    assert bundling.target_revision(root) != FLASK_HEAD


def test_hashes_follow_the_revision_files_not_the_env_py(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    folder = flask_migrate_folder(root)
    hashes = {"migrations": bundling.migrations_hash(root, migrations=folder),
              "asset": bundling.bundle_fingerprint(root, migrations=folder)}

    def now() -> dict[str, str]:
        return {"migrations": bundling.migrations_hash(root, migrations=folder),
                "asset": bundling.bundle_fingerprint(root, migrations=folder)}

    # WHEN the team's env.py or alembic.ini changes THEN neither hash does: neither runs
    for name in ("env.py", "alembic.ini"):
        (folder / name).write_text((folder / name).read_text() + "\n# edited\n")
    assert now() == hashes
    # WHEN a revision file changes, or a file it reads beside it appears THEN both change
    revision = folder / "versions" / "b2e1d4c6f8a0_posts.py"
    revision.write_text(revision.read_text() + "\n# reviewed\n")
    edited = now()
    assert edited["migrations"] != hashes["migrations"] and edited["asset"] != hashes["asset"]
    (folder / "versions" / "seed.sql").write_text("INSERT INTO users VALUES (1, 'a@b.c');\n")
    added = now()
    assert added["migrations"] != edited["migrations"] and added["asset"] != edited["asset"]


def test_both_layouts_of_the_same_revisions_make_the_same_bundle(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    folder = flask_migrate_folder(root)
    files_only = root / "db" / "revisions"
    shutil.copytree(folder / "versions", files_only)
    for function in (bundling.migrations_hash, bundling.target_revision,
                     bundling.scripts_history_digest):
        assert function(root, migrations=folder) == function(root, migrations=files_only)
    assert bundling.bundle_fingerprint(root, migrations=folder) == bundling.bundle_fingerprint(
        root, migrations=files_only)


def test_docker_fallback_copies_the_folder_revisions(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    inside = flask_migrate_folder(root)
    command = bundling.docker_command(bundling.MIGRATION_BUNDLE, root, migrations=inside)[-1]
    assert "cp -r migrations/versions/. /asset-output/migrations/versions/" in command
    assert "env.py" not in command
    # a folder outside the project is not mounted in the build image: the command says so
    outside = flask_migrate_folder(tmp_path / "elsewhere")
    failing = bundling.docker_command(bundling.MIGRATION_BUNDLE, root, migrations=outside)[-1]
    assert "is outside" in failing and failing.endswith("exit 1")


MIGRATE_FROM_BUNDLE = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, os.getcwd())
    import migration_resource
    from migration_resource.engine import MigrationEngine
    from migration_resource.settings import EngineSettings
    engine = MigrationEngine(EngineSettings.from_environment())
    try:
        outcome = engine.migrate()
    finally:
        engine.close()
    print(json.dumps({"package": migration_resource.__file__,
                      "scripts": str(engine.settings.script_location),
                      "applied": [a.revision for a in outcome.applied],
                      "modules": sorted(m for m in ("sample_app", "flask") if m in sys.modules)}))
""")


def test_the_engine_migrates_from_the_bundled_layout(
    tmp_path: Path, database_url: str, db: sa.Engine
) -> None:
    # GIVEN the migration bundle's sources for a team's Flask-Migrate folder, copied
    root = project_copy(tmp_path)
    folder = flask_migrate_folder(tmp_path / "team")
    out = tmp_path / "bundle"
    bundling.copy_sources(root, out, bundling.MIGRATION_BUNDLE, migrations=folder)
    # WHEN the engine runs from there with the settings the function gets (no MIGRATIONS_PATH:
    # the default discovery finds migrations/versions/ in the bundle)
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url,
           "MIGRATION_NAMING_CONVENTION": json.dumps(FLASK_CONVENTION)}
    result = subprocess.run([sys.executable, "-I", "-c", MIGRATE_FROM_BUNDLE], cwd=out,
                            env=env, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # THEN it used the bundle's copy and migrated both revisions, named by the convention
    assert report["package"].startswith(str(out))
    assert report["scripts"] == str(out / "migrations")
    assert report["applied"] == ["a1f0c3d5e7b9", FLASK_HEAD]
    assert report["modules"] == []  # neither the sample app nor the team's Flask app loaded
    assert names(db) == CONVENTION_NAMES
    assert not (folder / "env_py_ran").exists()
    # and the bundle carries the revisions' code checksums, as the engine computes them
    versions = out / bundling.VERSIONS_TARGET
    manifest = json.loads((versions / checksums.MANIFEST_NAME).read_text())
    assert {name: entry["code"] for name, entry in manifest["files"].items()} == {
        path.name: checksums.code_checksum(path) for path in versions.glob("*.py")}
    assert len(manifest["files"]) == 2
