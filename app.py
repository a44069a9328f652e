#!/usr/bin/env python3
"""CDK entry point: read the stage's settings from cdk.json once and compose the stacks."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk

from cdk_app.config import file_context, load_stage_settings

app = cdk.App(context=file_context(Path(__file__).resolve().parent))
settings = load_stage_settings(
    {key: app.node.try_get_context(key) for key in ("stages", "defaultStage")},
    app.node.try_get_context("stage"),
)
# The stacks (database, migration function and custom resource, monitoring) are composed
# here from `settings` as they are added; until then the app synthesizes no stack.
app.synth()
