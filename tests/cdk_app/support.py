"""Synthesize the CDK app in-process, the way app.py does, for assertions on its templates.

Each stage is synthesized once per session (conftest.py). Bundled synths share one outdir,
`.local/cdk-test.out`, so each Lambda bundle (the migration function's, the application's) is
built once and then reused from `asset.<hash>/` (the hash covers the sources, requirements,
pip options, the bundle's spec and the bundler) by both stages and by later runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk.assertions import Template

from cdk_app.composition import Composition, compose
from cdk_app.config import StageSettings, file_context, load_stage_settings
from localdev import releases
from tests.alembic.support import REPO_ROOT

SHARED_OUTDIR = REPO_ROOT / ".local" / "cdk-test.out"
# The context key with which the CDK CLI limits bundling to some stacks; [] skips bundling.
BUNDLING_STACKS = "aws:cdk:bundling-stacks"


@dataclass
class Synth:
    settings: StageSettings
    composition: Composition
    outdir: Path
    # "database" / "application" -> template JSON; no "database" for an existing database
    templates: dict[str, dict[str, Any]]
    manifest: dict[str, Any]

    @property
    def database(self) -> Template:
        return Template.from_json(self.templates["database"])

    @property
    def application(self) -> Template:
        return Template.from_json(self.templates["application"])

    def resources(self, which: str, type_: str) -> dict[str, dict[str, Any]]:
        return {key: value for key, value in self.templates[which]["Resources"].items()
                if value["Type"] == type_}

    def one(self, which: str, type_: str) -> dict[str, Any]:
        found = list(self.resources(which, type_).values())
        assert len(found) == 1, f"{len(found)} {type_} in the {which} stack"
        return found[0]

    def bundle_dir(self, function: str = "Migration") -> Path:
        """The asset folder of a function's code; `function` is the construct id
        (`Migration` or `SampleApp`)."""
        found = [resource["Properties"]["Code"]["S3Key"]
                 for key, resource in self.templates["application"]["Resources"].items()
                 if resource["Type"] == "AWS::Lambda::Function"
                 and key.startswith(f"{function}Function")]
        assert len(found) == 1, found
        folder = self.outdir / f"asset.{str(found[0]).removesuffix('.zip')}"
        assert folder.is_dir(), folder
        return folder


def project_copy(tmp_path: Path) -> Path:
    """The sources a synth reads (migrations, engine, sample app) copied, to edit freely."""
    return releases.project_copy(tmp_path / "project",
                                 folders=("alembic", "migration_resource", "sample_app"),
                                 files=())


def stage_context(stage: str, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """cdk.json's context (and cdk.context.json) with `changes` applied to the stage."""
    context = json.loads(json.dumps(file_context(REPO_ROOT)))
    context["stages"][stage].update(changes or {})
    return context


def synthesize(
    stage: str, *, outdir: Path, changes: Mapping[str, Any] | None = None,
    bundling: bool = True, project_root: Path = REPO_ROOT,
) -> Synth:
    context = stage_context(stage, changes)
    if not bundling:
        context[BUNDLING_STACKS] = []
    app = cdk.App(outdir=str(outdir), context=context)
    settings = load_stage_settings(context, stage)
    composition = compose(app, settings, project_root=project_root)
    assembly = app.synth()
    templates = {
        which: json.loads((Path(assembly.directory) / stack.template_file).read_text())
        for which, stack in (("database", composition.database),
                             ("application", composition.application))
        if stack is not None
    }
    manifest = json.loads((Path(assembly.directory) / "manifest.json").read_text())
    return Synth(settings=settings, composition=composition, outdir=Path(assembly.directory),
                 templates=templates, manifest=manifest)
