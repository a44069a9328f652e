"""The package a team installs from a clone: built as pip builds it, then used from a team's
own folder with only the documented import, far from this repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.alembic.support import REPO_ROOT

TEAM_APP = textwrap.dedent('''
    import json
    import sys
    from pathlib import Path

    import aws_cdk as cdk
    from aws_cdk import aws_ec2 as ec2
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk import aws_rds as rds
    from aws_cdk import aws_secretsmanager as secretsmanager

    import cdk_app.constructs.database_migrations as installed
    from cdk_app.constructs.database_migrations import DatabaseMigrations, MigrationSettings

    app = cdk.App(outdir=sys.argv[1], context={"aws:cdk:bundling-stacks": []})
    stack = cdk.Stack(app, "Orders", env=cdk.Environment(account="123456789012",
                                                         region="eu-west-1"))
    vpc = ec2.Vpc.from_vpc_attributes(stack, "Vpc", vpc_id="vpc-0123456789abcdef0",
                                      availability_zones=["eu-west-1a"],
                                      private_subnet_ids=["subnet-0123456789abcdef1"])
    clients = ec2.SecurityGroup.from_security_group_id(stack, "Clients",
                                                       "sg-0123456789abcdef0", mutable=False)
    migrations = DatabaseMigrations(
        stack, "Migrations",
        database=rds.DatabaseInstance.from_database_instance_attributes(
            stack, "Db", instance_identifier="orders-db", port=5432,
            instance_endpoint_address="orders-db.example.com", security_groups=[]),
        secret=secretsmanager.Secret.from_secret_complete_arn(
            stack, "Secret", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"),
        vpc=vpc, subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        security_group=clients, migrations=Path("migrations"),
        settings=MigrationSettings(stage_kind="production"))
    api = lambda_.Function(stack, "Api", runtime=lambda_.Runtime.PYTHON_3_12,
                           handler="api.handler", code=lambda_.Code.from_inline("x = 1"),
                           vpc=vpc, security_groups=[clients])
    migrations.connect_application(api)
    template = app.synth().get_stack_by_name("Orders").template
    print(json.dumps({"engine_root": str(installed.ENGINE_ROOT),
                      "properties": template["Resources"]["DatabaseMigration"]["Properties"]}))
''')


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from a clone (pyproject.toml), unpacked as an install would."""
    root = tmp_path_factory.mktemp("package")
    clone = root / "clone"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("cdk_app", "migration_resource", "sample_app", "tests"):
        shutil.copytree(REPO_ROOT / folder, clone / folder, ignore=ignore)
    shutil.copy2(REPO_ROOT / "pyproject.toml", clone / "pyproject.toml")
    built = subprocess.run(
        # The venv's own setuptools (requirements-dev.txt) is the build backend: the build
        # needs no download.
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--disable-pip-version-check", "-w", str(root / "wheel"), str(clone)],
        capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "wheel").glob("*.whl")
    site = root / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_package_holds_the_construct_and_the_engine_only(installed: Path) -> None:
    assert (installed / "cdk_app" / "constructs" / "database_migrations.py").is_file()
    assert (installed / "migration_resource" / "handler.py").is_file()
    # what bundling reads besides Python: the bundle's requirements, the engine's template
    assert (installed / "migration_resource" / "requirements.txt").is_file()
    assert list((installed / "migration_resource").rglob("*.mako"))
    assert not (installed / "sample_app").exists() and not (installed / "tests").exists()


def test_a_team_app_uses_the_installed_construct(installed: Path, tmp_path: Path) -> None:
    # GIVEN a team's folder with its own revision files, and the package on its path only
    team = tmp_path / "team"
    shutil.copytree(REPO_ROOT / "alembic" / "versions", team / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (team / "app.py").write_text(TEAM_APP)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(installed),
           "HOME": str(tmp_path), "JSII_SILENCE_WARNING_DEPRECATED_NODE": "1"}
    # WHEN its CDK app synthesizes
    result = subprocess.run([sys.executable, "-P", "app.py", str(tmp_path / "out")],
                            cwd=team, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    # THEN the engine comes from the installed package, the revisions from the team's folder
    assert Path(answer["engine_root"]) == installed
    properties = answer["properties"]
    assert properties["DbInstanceIdentifier"] == "orders-db"
    assert properties["TargetRevision"] and len(properties["MigrationsHash"]) == 64
