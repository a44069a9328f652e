"""The Lambda bundle: built without Docker, the right layout, importable under Python 3.12."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cdk_app import bundling
from localdev import deploy as local_deploy
from tests.alembic.support import DROP_USERS_NAME, REPO_ROOT
from tests.cdk_app.support import SHARED_OUTDIR, Synth, project_copy

# The Lambda runtime's interpreter here; see DESIGN.md (the `python3.12` shim fails).
PYTHON_312 = local_deploy.KNOWN_PYTHON_312
# The Lambda runtime ships boto3; the bundle does not. The pinned version stands in for it.
RUNTIME_DIR = SHARED_OUTDIR.parent / "lambda-runtime-py312"


def test_layout_packages_and_migrations_not_named_alembic(dev: Synth) -> None:
    bundle = dev.bundle_dir()
    assert (bundle / "migration_resource" / "handler.py").is_file()
    assert (bundle / "sample_app" / "models.py").is_file()
    # the scripts are in migrations/; alembic/ is the library pip installed
    assert (bundle / "migrations" / "env.py").is_file()
    assert (bundle / "migrations" / "script.py.mako").is_file()
    versions = sorted(p.name for p in (bundle / "migrations" / "versions").glob("*.py"))
    assert versions == sorted(p.name for p in (REPO_ROOT / "alembic" / "versions").glob("*.py"))
    assert (bundle / "alembic" / "command.py").is_file()
    assert not (bundle / "alembic" / "env.py").exists()
    # binary wheels for the Lambda's platform, and no bytecode or test folders of ours
    assert any(bundle.glob("psycopg_binary*/**/*cpython-312-x86_64-linux-gnu.so"))
    assert not list(bundle.glob("**/__pycache__"))
    assert not (bundle / "tests").exists() and not (bundle / ".venv").exists()


def test_asset_hash_covers_sources_requirements_and_bundler(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    before = bundling.bundle_fingerprint(root)
    assert bundling.bundle_fingerprint(root) == before  # stable: the cache can work
    (root / "sample_app" / "models.py").write_text(
        (root / "sample_app" / "models.py").read_text() + "\n# edited\n")
    after_source = bundling.bundle_fingerprint(root)
    (root / bundling.REQUIREMENTS).write_text(
        (root / bundling.REQUIREMENTS).read_text() + "\n# edited\n")
    after_requirements = bundling.bundle_fingerprint(root)
    assert len({before, after_source, after_requirements}) == 3
    # __pycache__ is not part of it
    (root / "migration_resource" / "__pycache__").mkdir(exist_ok=True)
    (root / "migration_resource" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert bundling.bundle_fingerprint(root) == after_requirements


def test_second_synth_reuses_the_bundle(dev: Synth) -> None:
    # GIVEN the session's synth left asset.<hash>/ in the shared outdir
    bundle = dev.bundle_dir()
    marker = bundle / ".reused"
    marker.write_text("")
    try:
        # WHEN the same app is synthesized again into that outdir
        from tests.cdk_app.support import synthesize  # noqa: PLC0415

        again = synthesize("dev", outdir=SHARED_OUTDIR)
        # THEN it points at the same directory, which was not rebuilt
        assert again.bundle_dir() == bundle
        assert marker.exists()
    finally:
        marker.unlink(missing_ok=True)


def lambda_runtime(python: str) -> Path:
    """boto3 at the pinned version for cp312, as the Lambda runtime provides it."""
    return local_deploy.lambda_runtime(local_deploy.LocalEnvironment(
        local_dir=RUNTIME_DIR.parent, python=python, runtime_dir=RUNTIME_DIR))[1]


IMPORT_CHECK = textwrap.dedent("""
    import json, sys
    from migration_resource import handler
    import sample_app.handler
    from migration_resource.settings import resolve_script_location
    from migration_resource.revisions import RevisionCatalogue
    location = resolve_script_location()
    answer = handler.handler({"unexpected": True}, None)
    print(json.dumps({
        "python": "%d.%d" % sys.version_info[:2],
        "handler": handler.__file__,
        "scripts": str(location),
        "head": RevisionCatalogue.load(location).head,
        "answer": answer,
        "psycopg": __import__("psycopg").pq.__impl__,
    }))
""")


def test_bundle_imports_the_handler_under_python_312(dev: Synth) -> None:
    """Runs the bundle as the Lambda would: its own folder first, boto3 from the runtime.

    Uses the real Python 3.12 when this machine has it (DESIGN.md); otherwise the venv's
    Python, which cannot load the bundle's cp312 binary wheels, so then only our own code's
    layout is checked, with the venv's libraries, and the test says so in its output.
    """
    bundle = dev.bundle_dir()
    if PYTHON_312.exists():
        python, path = str(PYTHON_312), [str(bundle), str(lambda_runtime(str(PYTHON_312)))]
        expected_python = "3.12"
    else:
        print(f"{PYTHON_312} is missing: checking the bundle's layout with {sys.executable} "
              "and the venv's libraries (the cp312 wheels are not loaded)")
        python = sys.executable
        # the venv's libraries first (the bundle's are cp312), our packages from the bundle
        path = [p for p in sys.path if "/lib/python" in p] + [str(bundle)]
        expected_python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    code = f"import sys; sys.path[:0] = {path!r}\n" + IMPORT_CHECK
    result = subprocess.run(
        # -B: no __pycache__ may land in the cached bundle (it would be deployed)
        [python, "-I", "-B", "-c", code], cwd=bundle, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "eu-west-1",
             "AWS_REGION": "eu-west-1", "POWERTOOLS_METRICS_DISABLED": "true"},
        check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["python"] == expected_python
    assert report["handler"].startswith(str(bundle))
    assert report["scripts"] == str(bundle / "migrations")
    assert report["head"] == DROP_USERS_NAME
    assert report["answer"]["ok"] is False
    if expected_python == "3.12":
        assert report["psycopg"] == "binary"


@pytest.mark.parametrize("name", ["migration_resource", "sample_app"])
def test_docker_fallback_builds_the_same_layout(name: str) -> None:
    command = bundling.docker_command()[-1]
    assert "cp -r migration_resource sample_app /asset-output/" in command
    assert "/asset-output/migrations" in command and name in command
