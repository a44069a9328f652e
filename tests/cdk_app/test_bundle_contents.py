"""What the slim bundles hold, and that they still work under the Lambda's Python 3.12.

The bundles are the session's (`dev`: migration bundle and the auto-migrating application's;
`prod`: the check-only application's, without pglast), built once and reused (conftest.py).
Each import test is one Python 3.12 process running from the bundle as the Lambda would (the
bundle first on sys.path, boto3 from the runtime), against a real database: a slimming rule
that removes something a path needs fails here, not in AWS.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cdk_app import bundle_slim, bundling
from localdev import deploy as local_deploy
from localdev.lambda_python import find_lambda_python
from migration_resource.engine import MigrationEngine
from migration_resource.settings import EngineSettings
from tests.alembic.support import HEAD, REPO_ROOT
from tests.cdk_app.support import SHARED_OUTDIR, Synth

# The Lambda runtime's interpreter (DESIGN.md: the `python3.12` shim fails), or LAMBDA_PYTHON.
PYTHON_312 = find_lambda_python()
# The Lambda runtime ships boto3; the bundle does not. The pinned version stands in for it.
RUNTIME_DIR = SHARED_OUTDIR.parent / "lambda-runtime-py312"
MIGRATION_ZIPPED_LIMIT = 10_000_000  # issue 15's target for the migration asset
NEVER_SHIPPED_SUFFIXES = (".c", ".h", ".pyx", ".pxd", ".pyi", ".pyc")


# -- the slimming rules, on a small tree --------------------------------------------------------
def fake_install(root: Path, mode: int) -> Path:
    """A tree with one file of each kind the rules know, and a real shared object."""
    files = {
        "pkg/__init__.py": "VALUE = 1\n",
        "pkg/core.pyx": "# cython\n", "pkg/core.pxd": "", "pkg/core.c": "int x;\n",
        "pkg/api.h": "", "pkg/api.pyi": "VALUE: int\n", "pkg/py.typed": "",
        "pkg/__pycache__/__init__.cpython-312.pyc": "junk",
        "pkg-1.0.dist-info/METADATA": "Name: pkg\nVersion: 1.0\n",
        "pkg-1.0.dist-info/entry_points.txt": "[pkg.plugins]\nx = pkg\n",
        "pkg-1.0.dist-info/licenses/LICENSE": "MIT\n",
        "pkg-1.0.dist-info/RECORD": "pkg/__init__.py,,\n",
        "pkg-1.0.dist-info/INSTALLER": "pip\n", "pkg-1.0.dist-info/WHEEL": "x\n",
        "bin/pkg": "#!/somewhere/python\n",
        "sqlalchemy/testing/__init__.py": "", "sqlalchemy/dialects/sqlite/provision.py": "",
        "sqlalchemy/dialects/sqlite/base.py": "",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    shared = next(Path(sa.__file__).parent.glob("**/*.so"))  # any ELF with symbols
    shutil.copy(shared, root / "pkg" / "_speedups.cpython-312-x86_64-linux-gnu.so")
    for path in root.rglob("*"):
        path.chmod(mode if path.is_file() else 0o700)
    return root


def test_slim_leaves_out_what_never_runs_and_keeps_what_metadata_reads(tmp_path: Path) -> None:
    tree = fake_install(tmp_path / "a", 0o600)
    report = bundle_slim.slim(tree)
    left = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    assert left == [
        "pkg-1.0.dist-info/METADATA", "pkg-1.0.dist-info/entry_points.txt",
        "pkg-1.0.dist-info/licenses/LICENSE",
        "pkg/__init__.py", "pkg/_speedups.cpython-312-x86_64-linux-gnu.so",
        "sqlalchemy/dialects/sqlite/base.py",
    ]
    assert report.stripped == 1
    assert report.removed_files["build sources and type stubs"] == 6
    assert report.removed_files["test support of SQLAlchemy, Alembic, Mako"] == 2


def test_slim_is_deterministic_whatever_the_modes_and_times(tmp_path: Path) -> None:
    first = bundle_slim.slim(fake_install(tmp_path / "a", 0o600))
    second_tree = fake_install(tmp_path / "b", 0o777)
    os.utime(second_tree / "pkg" / "__init__.py", (2_000_000_000, 2_000_000_000))
    bundle_slim.slim(second_tree)
    assert first.stripped == 1
    assert bundle_slim.tree_digest(tmp_path / "a") == bundle_slim.tree_digest(second_tree)
    for path in second_tree.rglob("*"):
        assert path.stat().st_mtime == bundle_slim.EPOCH
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644)


# -- the session's bundles ----------------------------------------------------------------------
def files(bundle: Path) -> list[Path]:
    return [p for p in bundle.rglob("*") if p.is_file()]


def zipped_size(bundle: Path) -> int:
    """The asset's size as CDK uploads it (deflate at zlib's default level, like its zip)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(files(bundle)):
            archive.write(path, path.relative_to(bundle).as_posix())
    return len(buffer.getvalue())


def test_migration_bundle_is_slim(dev: Synth) -> None:
    bundle = dev.bundle_dir("Migration")
    names = [p.relative_to(bundle).as_posix() for p in files(bundle)]
    assert not [n for n in names if n.endswith(NEVER_SHIPPED_SUFFIXES) or "__pycache__" in n]
    assert not (bundle / "bin").exists()
    assert not [n for n in names if n.endswith(".dist-info/RECORD")]
    for folder in bundle_slim.TEST_SUPPORT:
        assert not (bundle / folder).exists()
    # what importlib.metadata reads stays: SQLAlchemy's and Alembic's entry points, versions
    for distribution in ("sqlalchemy-2.1.9", "alembic-1.20.1", "pglast-8.8", "crhelper-2.0.12"):
        assert (bundle / f"{distribution}.dist-info" / "METADATA").is_file()
    assert (bundle / "alembic-1.20.1.dist-info" / "entry_points.txt").is_file()
    assert list(bundle.glob("sqlalchemy-2.1.9.dist-info/licenses/*"))
    assert zipped_size(bundle) <= MIGRATION_ZIPPED_LIMIT


def test_every_shared_object_is_stripped(dev: Synth) -> None:
    readelf = shutil.which("readelf")
    assert readelf, "readelf (binutils, beside strip) is needed to check the bundle"
    shared = [p for p in files(dev.bundle_dir("Migration")) if bundle_slim._is_elf(p)]
    assert len(shared) > 10  # psycopg2's, SQLAlchemy's, pglast's and the vendored libraries
    for path in shared:
        sections = subprocess.run([readelf, "-S", "--wide", str(path)], capture_output=True,
                                  text=True, check=True).stdout
        assert ".symtab" not in sections and ".debug_" not in sections, path
        assert ".dynsym" in sections, path  # what the loader needs stays


def test_application_bundles_hold_only_what_the_application_uses(dev: Synth,
                                                                  prod: Synth) -> None:
    # dev auto-migrates: the gate (pglast) is in; prod only checks: it is not
    auto, check = dev.bundle_dir("SampleApp"), prod.bundle_dir("SampleApp")
    assert dev.settings.auto_migrate and not prod.settings.auto_migrate
    for bundle in (auto, check):
        assert not (bundle / "crhelper").exists()
        assert (bundle / "sample_app" / "handler.py").is_file()
        assert any((bundle / "migrations" / "versions").glob("*.py"))
        assert (bundle / "migration_resource" / "alembic_env" / "env.py").is_file()
        assert (bundle / "alembic" / "command.py").is_file()
    assert (auto / "pglast").is_dir()
    assert not (check / "pglast").exists()
    assert "pglast" in bundling.application_bundle(auto_migrate=False).leaves_out


# -- under Python 3.12, from the bundle ------------------------------------------------------------
def lambda_runtime() -> Path:
    """boto3 at the pinned version for cp312, as the Lambda runtime provides it."""
    return local_deploy.lambda_runtime(local_deploy.LocalEnvironment(
        local_dir=RUNTIME_DIR.parent, python=PYTHON_312, runtime_dir=RUNTIME_DIR))[1]


def run_in_bundle(bundle: Path, code: str, env: dict[str, str], cache: Path) -> dict[str, Any]:
    """Run `code` in a Python 3.12 process from `bundle`; its last stdout line is JSON."""
    assert Path(PYTHON_312).exists(), (
        f"no Python 3.12 at {PYTHON_312}: set LAMBDA_PYTHON to the Lambda runtime's version "
        "to import-test the bundles")
    path = [str(bundle), str(lambda_runtime())]
    result = subprocess.run(
        # -B: no bytecode may land in the cached bundle (it is deployed as it is); the cache
        # prefix (an empty folder of the test's) keeps stale bytecode from being read.
        [PYTHON_312, "-I", "-B", "-X", f"pycache_prefix={cache}", "-c",
         f"import sys; sys.path[:0] = {path!r}\n" + code],
        cwd=bundle, capture_output=True, text=True, timeout=180, check=False,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "eu-west-1",
             "AWS_REGION": "eu-west-1", "POWERTOOLS_METRICS_DISABLED": "true", **env})
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(bundle.glob("**/__pycache__"))
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["python"] == "3.12"
    assert report["bundle"] == str(bundle)
    return report


PREAMBLE = textwrap.dedent("""
    import json, os, sys
    def loaded(*names):
        return sorted(name for name in names if name in sys.modules)
    def report(**values):
        print(json.dumps({"python": "%d.%d" % sys.version_info[:2],
                          "bundle": os.path.dirname(os.path.dirname(
                              sys.modules["migration_resource"].__file__)), **values}))
""")

MIGRATION_CHECK = PREAMBLE + textwrap.dedent("""
    import importlib.util
    from migration_resource import handler
    at_import = loaded("alembic", "mako", "pglast", "migration_resource.gate")
    # the change gate parses with pglast's stripped parser
    from migration_resource import gate
    findings = gate.analyse({"r1": "ALTER TABLE users DROP COLUMN email"})
    # a whole migration from the bundle: Alembic, Mako, env.py, psycopg2, the gate
    from migration_resource.engine import MigrationEngine
    engine = handler.build_engine(os.environ, None)
    try:
        migrated = engine.migrate()
        status = engine.status()
    finally:
        engine.close()
    answer = handler.handler({"unexpected": True}, None)
    # psycopg 3 is not bundled: a URL naming it is a usage error, found before connecting
    from migration_resource.dsn import DatabaseUrlError, normalize_url
    try:
        psycopg3_url = str(normalize_url("postgresql+psycopg://app:Pa55-word@db/app"))
    except DatabaseUrlError as error:
        psycopg3_url = str(error)
    report(psycopg3_url=psycopg3_url, at_import=at_import, rules=[f.rule for f in findings],
           applied=len(migrated.applied), state=status.classification.state.value,
           head=list(status.classification.current), answer_ok=answer["ok"],
           driver=engine.database.dialect.driver,
           libpq=sys.modules["psycopg2"].__libpq_version__,
           psycopg3=importlib.util.find_spec("psycopg") is not None,
           scripts=str(engine.settings.script_location))
""")


def test_migration_bundle_migrates_under_python_312(dev: Synth, database_url: str,
                                                    tmp_path: Path) -> None:
    bundle = dev.bundle_dir("Migration")
    plain_url = database_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    report = run_in_bundle(bundle, MIGRATION_CHECK, {"DATABASE_URL": plain_url}, tmp_path)
    assert report["at_import"] == []  # Alembic, Mako and the gate load on first use
    assert report["rules"] == ["drop_column"]
    assert report["applied"] > 0 and report["state"] == "up_to_date"
    assert report["head"] == [HEAD]
    assert report["answer_ok"] is False
    # the plain postgresql:// URL selected psycopg2, with the libpq its wheel vendors
    assert report["driver"] == "psycopg2" and report["libpq"] >= 150000
    assert report["psycopg3"] is False
    assert "whose package (psycopg) is not installed here" in report["psycopg3_url"]
    assert "Pa55-word" not in report["psycopg3_url"]
    assert report["scripts"] == str(bundle / "migrations")


APP_CHECK = PREAMBLE + textwrap.dedent("""
    import importlib.util
    from sample_app import handler
    at_import = loaded("alembic", "mako", "pglast", "crhelper", "boto3")
    def request(method, path, body=None):
        event = {"version": "2.0", "rawPath": path, "body": body,
                 "requestContext": {"http": {"method": method, "path": path}}}
        return handler.handler(event, None)
    tasks = request("GET", "/tasks")
    user = request("POST", "/users", json.dumps({"email": "a@example.com"}))
    again = request("POST", "/users", json.dumps({"email": "a@example.com"}))
    report(at_import=at_import, tasks=tasks["statusCode"], user=user["statusCode"],
           again=again["statusCode"], driver=handler.database(os.environ).driver,
           missing=[name for name in ("crhelper", "pglast", "psycopg")
                    if importlib.util.find_spec(name) is None],
           gate_loaded="migration_resource.gate" in sys.modules)
""")


def test_auto_migrating_application_bundle_migrates_and_serves(
    dev: Synth, database_url: str, tmp_path: Path
) -> None:
    # GIVEN an empty database and the dev application's bundle (AUTO_MIGRATE=true)
    env = {"DATABASE_URL": database_url, "AUTO_MIGRATE": "true", "STAGE": "development"}
    # WHEN its first request arrives
    report = run_in_bundle(dev.bundle_dir("SampleApp"), APP_CHECK, env, tmp_path)
    # THEN it migrated through the gate and served; crhelper is not in the bundle
    assert report["at_import"] == []
    # (a second POST of the same email: 409, from the SQLSTATE psycopg2 reports)
    assert (report["tasks"], report["user"], report["again"]) == (200, 201, 409)
    assert report["driver"] == "psycopg2"
    assert report["missing"] == ["crhelper", "psycopg"]
    assert report["gate_loaded"] is True


def test_check_only_application_bundle_serves_without_the_gate(
    prod: Synth, database_url: str, tmp_path: Path
) -> None:
    # GIVEN a database at head (migrated from here) and prod's application bundle
    engine = MigrationEngine(EngineSettings(database_url=database_url,
                                            script_location=REPO_ROOT / "alembic"))
    try:
        engine.migrate()
    finally:
        engine.close()
    env = {"DATABASE_URL": database_url, "AUTO_MIGRATE": "false", "STAGE": "production"}
    # WHEN its first request arrives
    report = run_in_bundle(prod.bundle_dir("SampleApp"), APP_CHECK, env, tmp_path)
    # THEN it checked and served, with neither crhelper nor pglast in its bundle
    assert report["at_import"] == []
    assert (report["tasks"], report["user"], report["again"]) == (200, 201, 409)
    assert report["driver"] == "psycopg2"
    assert report["missing"] == ["crhelper", "pglast", "psycopg"]
    assert report["gate_loaded"] is False
