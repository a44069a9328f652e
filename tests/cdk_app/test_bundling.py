"""The Lambda bundles: built without Docker, the right layout, a hash that follows the inputs.

What they hold and that they work under Python 3.12: test_bundle_contents.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cdk_app import bundling
from tests.alembic.support import REPO_ROOT
from tests.cdk_app.support import SHARED_OUTDIR, Synth, project_copy


def test_layout_packages_and_migrations_not_named_alembic(dev: Synth) -> None:
    bundle = dev.bundle_dir()
    assert (bundle / "migration_resource" / "handler.py").is_file()
    # the engine's own Alembic environment; the sample application is not needed to migrate
    assert (bundle / "migration_resource" / "alembic_env" / "env.py").is_file()
    assert (bundle / "migration_resource" / "alembic_env" / "script.py.mako").is_file()
    assert not (bundle / "sample_app").exists()
    assert (dev.bundle_dir("SampleApp") / "sample_app" / "models.py").is_file()
    # the revision files are in migrations/versions/; alembic/ is the library pip installed;
    # the repository's alembic/env.py is not packed (the engine never runs it); beside them,
    # their checksums as the synth computed them
    assert sorted(p.relative_to(bundle).as_posix()
                  for p in (bundle / "migrations").rglob("*") if p.is_file()) == sorted(
        [f"migrations/versions/{p.name}" for p in (REPO_ROOT / "alembic" / "versions").glob("*.py")]
        + ["migrations/versions/code-checksums.json"])
    assert (bundle / "alembic" / "command.py").is_file()
    assert not (bundle / "alembic" / "env.py").exists()
    # binary wheels for the Lambda's platform, and no bytecode or test folders of ours
    assert any(bundle.glob("psycopg2/_psycopg.cpython-312-x86_64-linux-gnu.so"))
    assert any(bundle.glob("psycopg2_binary.libs/libpq*.so*"))  # psycopg2-binary's own libpq
    assert not (bundle / "psycopg").exists()  # psycopg 3 is a dev requirement only
    assert not list(bundle.glob("**/__pycache__"))
    assert not (bundle / "tests").exists() and not (bundle / ".venv").exists()


def test_asset_hash_covers_sources_requirements_and_bundler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project_copy(tmp_path)
    before = bundling.bundle_fingerprint(root)
    assert bundling.bundle_fingerprint(root) == before  # stable: the cache can work
    revision = next((root / "alembic" / "versions").glob("*.py"))
    revision.write_text(revision.read_text() + "\n# edited\n")
    after_source = bundling.bundle_fingerprint(root)
    (root / bundling.REQUIREMENTS).write_text(
        (root / bundling.REQUIREMENTS).read_text() + "\n# edited\n")
    after_requirements = bundling.bundle_fingerprint(root)
    assert len({before, after_source, after_requirements}) == 3
    # __pycache__ is not part of it
    (root / "migration_resource" / "__pycache__").mkdir(exist_ok=True)
    (root / "migration_resource" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert bundling.bundle_fingerprint(root) == after_requirements
    # each bundle its own hash; the application's ignores what it leaves out
    app = bundling.application_bundle(auto_migrate=False)
    app_hash = bundling.bundle_fingerprint(root, app)
    # the sample application is in the application's bundle only
    (root / "sample_app" / "models.py").write_text(
        (root / "sample_app" / "models.py").read_text() + "\n# edited\n")
    assert bundling.bundle_fingerprint(root) == after_requirements
    assert bundling.bundle_fingerprint(root, app) != app_hash
    app_hash = bundling.bundle_fingerprint(root, app)
    assert app_hash not in (after_requirements,
                            bundling.bundle_fingerprint(root, bundling.application_bundle(
                                auto_migrate=True)))
    assert not any(line.startswith(("crhelper", "pglast")) for line in app.requirements(root))
    # the slimming rules are the bundler's code too
    slim_copy = tmp_path / "bundle_slim.py"
    slim_copy.write_text(Path(bundling.bundle_slim.__file__).read_text() + "\n# edited\n")
    monkeypatch.setattr(bundling, "BUNDLER_FILES", (bundling.BUNDLER_FILES[0], slim_copy))
    assert bundling.bundle_fingerprint(root, app) != app_hash


def test_second_synth_reuses_the_bundles(dev: Synth) -> None:
    # GIVEN the session's synth left asset.<hash>/ folders in the shared outdir
    bundles = [dev.bundle_dir("Migration"), dev.bundle_dir("SampleApp")]
    assert bundles[0] != bundles[1]  # each function its own bundle
    markers = [bundle / ".reused" for bundle in bundles]
    for marker in markers:
        marker.write_text("")
    try:
        # WHEN the same app is synthesized again into that outdir
        from tests.cdk_app.support import synthesize  # noqa: PLC0415

        again = synthesize("dev", outdir=SHARED_OUTDIR)
        # THEN it points at the same directories, which were not rebuilt
        assert [again.bundle_dir("Migration"), again.bundle_dir("SampleApp")] == bundles
        assert all(marker.exists() for marker in markers)
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)


def test_docker_fallback_builds_the_same_layout_and_slims_it() -> None:
    migration = bundling.docker_command(bundling.MIGRATION_BUNDLE)[-1]
    application = bundling.docker_command(bundling.application_bundle(auto_migrate=False))[-1]
    assert "cp -r migration_resource /asset-output/" in migration
    assert "cp -r migration_resource sample_app /asset-output/" in application
    for command in (migration, application):
        assert "cp -r alembic/versions/. /asset-output/migrations/versions/" in command
        # the same rules, from the mounted project, inside the build image
        assert command.endswith("python cdk_app/bundle_slim.py /asset-output")
    assert "'crhelper==" in migration and "'pglast==" in migration
    assert "crhelper" not in application and "pglast" not in application
