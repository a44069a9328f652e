#!/usr/bin/env python3
"""CDK entry point: read the stage's settings from cdk.json once and compose the stacks.

    npx cdk synth                 # the default stage (dev)
    npx cdk synth -c stage=prod
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk

from cdk_app.composition import compose
from cdk_app.config import file_context, load_stage_settings

PROJECT_ROOT = Path(__file__).resolve().parent

app = cdk.App(context=file_context(PROJECT_ROOT))
settings = load_stage_settings(
    {key: app.node.try_get_context(key)
     for key in ("stages", "defaultStage", "account", "region")},
    app.node.try_get_context("stage"),
)
compose(app, settings, project_root=PROJECT_ROOT)
app.synth()
