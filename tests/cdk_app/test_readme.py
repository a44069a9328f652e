"""README "Add it to your app", followed word by word: its code blocks, as a newcomer copies
them, synthesize; first with migrations on deploy off, then on (the rollout it describes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest

from cdk_app.composition import compose
from cdk_app.config import file_context, load_stage_settings
from tests.alembic.support import REPO_ROOT
from tests.cdk_app.support import BUNDLING_STACKS, project_copy

SECTION = "## Add it to your app"
MIGRATIONS_OFF = 'MigrationSettings(stage_kind="production", migrate_on_deploy=False)'


def section_blocks() -> dict[str, list[str]]:
    """The section's fenced code blocks by language, in order."""
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    text = readme[start:end if end != -1 else None]
    blocks: dict[str, list[str]] = {}
    for language, body in re.findall(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M):
        blocks.setdefault(language, []).append(body)
    return blocks


def revision_files(into: Path) -> None:
    shutil.copytree(REPO_ROOT / "alembic" / "versions", into,
                    ignore=shutil.ignore_patterns("__pycache__"))


def test_the_section_installs_from_a_clone() -> None:
    (install,) = section_blocks()["bash"]
    assert "pip install -e ../db-migrations" in install.splitlines()
    (app,) = section_blocks()["python"]
    assert ("from cdk_app.constructs.database_migrations import DatabaseMigrations, "
            "MigrationSettings") in app.splitlines()


def synth_team_app(team: Path, app_text: str, outdir: Path) -> dict[str, Any]:
    (team / "app.py").write_text(app_text)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(team),
           # what `pip install -e` of the clone gives: the package importable from it
           "PYTHONPATH": str(REPO_ROOT),
           # `cdk synth` passes these to the app: where to write, and (here) no bundling
           "CDK_OUTDIR": str(outdir),
           "CDK_CONTEXT_JSON": json.dumps({BUNDLING_STACKS: []}),
           "JSII_SILENCE_WARNING_DEPRECATED_NODE": "1"}
    result = subprocess.run([sys.executable, "-P", "app.py"], cwd=team, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    template: dict[str, Any] = json.loads((outdir / "Orders.template.json").read_text())
    return template


def test_the_construct_in_a_team_app_synthesizes_then_migrates_on(tmp_path: Path) -> None:
    # GIVEN a team's folder: the README's app.py, its migrations folder, its function's code
    (app_text,) = section_blocks()["python"]
    team = tmp_path / "orders-app"
    revision_files(team / "migrations")
    (team / "src").mkdir()
    (team / "src" / "api.py").write_text("def handler(event, context):\n    return {}\n")
    # WHEN it synthesizes as the README has it (the first rollout step)
    template = synth_team_app(team, app_text, tmp_path / "off")
    resources = template["Resources"]
    properties = resources["DatabaseMigration"]["Properties"]
    # THEN the migration resource reports only, for the team's database
    assert properties["MigrateOnDeploy"] is False
    assert properties["DbInstanceIdentifier"] == "orders-db"
    assert properties["Stage"] == "production"
    (api_id,) = [key for key, value in resources.items()
                 if value["Type"] == "AWS::Lambda::Function" and key.startswith("Api")]
    api = resources[api_id]
    # and the team's function is connected: after the migration, with the engine's variables
    assert "DatabaseMigration" in api["DependsOn"]
    variables = api["Properties"]["Environment"]["Variables"]
    assert variables["DATABASE_SECRET_ARN"].endswith(":secret:orders-db/master-Ab12Cd")
    assert variables["AUTO_MIGRATE"] == "false"
    # WHEN migrations on deploy are turned on (the second step)
    assert MIGRATIONS_OFF in app_text
    on = synth_team_app(team, app_text.replace(MIGRATIONS_OFF,
                                               'MigrationSettings(stage_kind="production")'),
                        tmp_path / "on")
    # THEN only that property changes
    on_properties = on["Resources"]["DatabaseMigration"]["Properties"]
    assert on_properties["MigrateOnDeploy"] is True
    assert {key: value for key, value in on_properties.items() if key != "MigrateOnDeploy"} \
        == {key: value for key, value in properties.items() if key != "MigrateOnDeploy"}


def synth_stage(project: Path, stages: dict[str, Any], stage: str,
                outdir: Path) -> dict[str, Any]:
    context = file_context(REPO_ROOT)
    context["stages"].update(stages)
    context[BUNDLING_STACKS] = []
    app = cdk.App(outdir=str(outdir), context=context)
    composition = compose(app, load_stage_settings(context, stage), project_root=project)
    assert composition.database is None  # an existing database: no database stack
    assembly = app.synth()
    template: dict[str, Any] = json.loads(
        (Path(assembly.directory) / composition.application.template_file).read_text())
    return template


@pytest.mark.parametrize("migrate_on_deploy", [False, True])
def test_the_cdk_json_stage_for_an_existing_database_synthesizes(
        tmp_path: Path, migrate_on_deploy: bool) -> None:
    # GIVEN this checkout with the README's stage added under context.stages, and the
    # team's revision files at its migrationsPath
    (block,) = section_blocks()["json"]
    stages = json.loads(block)
    (name,) = stages
    stage = stages[name]
    assert stage["migrateOnDeploy"] is False  # the rollout's first step, as shown
    stage["migrateOnDeploy"] = migrate_on_deploy
    project = project_copy(tmp_path)
    revision_files(project / stage["migrationsPath"])
    # WHEN it synthesizes
    template = synth_stage(project, stages, name, tmp_path / "cdk.out")
    # THEN the stack migrates the named database, with the stage's settings
    properties = template["Resources"]["DatabaseMigration"]["Properties"]
    assert properties["DbInstanceIdentifier"] == stage["existingDatabase"]["identifier"]
    assert properties["MigrateOnDeploy"] is migrate_on_deploy
    assert properties["SnapshotBeforeMigrate"] is True
    migration = next(value for key, value in template["Resources"].items()
                     if key.startswith("MigrationFunction")
                     and value["Type"] == "AWS::Lambda::Function")
    variables = migration["Properties"]["Environment"]["Variables"]
    assert json.loads(variables["MIGRATION_NAMING_CONVENTION"]) == stage["namingConvention"]
    assert variables["DATABASE_SECRET_ARN"] == stage["existingDatabase"]["secretArn"]
    # and the team's own function is there, connected check-only
    assert "TeamFunctionName" in template["Outputs"]
