"""What the synthesized app says about the migration resource: its properties as
CloudFormation sends them, the migration function's handler, environment, limits and asset
folder, and the application's functions the stack outputs (read from cdk.out's templates)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESOURCE_TYPE = "Custom::DatabaseMigration"
LOGICAL_ID = "DatabaseMigration"
FUNCTION_OUTPUT = "MigrationFunctionName"
TEAM_FUNCTION_OUTPUT = "TeamFunctionName"  # cdk_app/stacks/application_stack.py
APP_FUNCTION_OUTPUT = "SampleAppFunctionName"
# The application's functions the stack outputs, updated after the migration succeeded.
APPLICATION_OUTPUTS = (APP_FUNCTION_OUTPUT, TEAM_FUNCTION_OUTPUT)


class DeployError(RuntimeError):
    """The local environment could not be set up (not a failed deploy)."""


@dataclass(frozen=True)
class SynthesizedFunction:
    handler: str
    code_dir: Path
    environment: dict[str, str]  # the function's plain (non-token) variables
    timeout_seconds: float
    memory_mb: int


@dataclass(frozen=True)
class SynthesizedResource:
    stack_name: str
    properties: dict[str, str]  # as CloudFormation sends them: every scalar a string
    handler: str
    code_dir: Path
    environment: dict[str, str]  # the function's plain (non-token) variables
    timeout_seconds: float
    memory_mb: int
    # the existing database's secret name (from its ARN); None when the app creates it
    existing_secret_name: str | None = None
    # the application's functions, by the stack output naming each (APPLICATION_OUTPUTS)
    applications: Mapping[str, SynthesizedFunction] = field(default_factory=dict)

    @property
    def function(self) -> SynthesizedFunction:
        return SynthesizedFunction(self.handler, self.code_dir, self.environment,
                                   self.timeout_seconds, self.memory_mb)


def read_synthesized(cdk_out: Path, stage: str) -> SynthesizedResource:
    for template_path in sorted(cdk_out.glob(f"*-{stage}-*.template.json")):
        template = json.loads(template_path.read_text())
        resources: dict[str, Any] = template.get("Resources", {})
        custom = resources.get(LOGICAL_ID)
        if custom is None or custom.get("Type") != RESOURCE_TYPE:
            continue
        function_id = custom["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
        function = _synthesized_function(cdk_out, stage, resources[function_id]["Properties"])
        outputs = template.get("Outputs", {})
        named = {key: outputs[key]["Value"] for key in APPLICATION_OUTPUTS if key in outputs}
        # an existing database's secret is named by its ARN; a created one's is a token
        secret_arn = function.environment.get("DATABASE_SECRET_ARN")
        return SynthesizedResource(
            stack_name=template_path.name.removesuffix(".template.json"),
            properties={key: _cfn_string(value) for key, value in custom["Properties"].items()
                        if key != "ServiceToken"},
            handler=function.handler, code_dir=function.code_dir,
            environment=function.environment, timeout_seconds=function.timeout_seconds,
            memory_mb=function.memory_mb,
            existing_secret_name=_secret_name(secret_arn) if secret_arn else None,
            applications={key: _synthesized_function(cdk_out, stage,
                                                     resources[value["Ref"]]["Properties"])
                          for key, value in named.items()
                          if isinstance(value, dict) and "Ref" in value},
        )
    raise DeployError(f"no {RESOURCE_TYPE} {LOGICAL_ID} in {cdk_out} for stage {stage!r}; "
                      f"run `make synth CDK_STAGE={stage}`")


def _synthesized_function(cdk_out: Path, stage: str,
                          function: Mapping[str, Any]) -> SynthesizedFunction:
    asset_hash = str(function["Code"]["S3Key"]).removesuffix(".zip")
    code_dir = cdk_out / f"asset.{asset_hash}"
    if not code_dir.is_dir():
        raise DeployError(f"{code_dir} is missing: synthesize again with "
                          f"`make synth CDK_STAGE={stage}`")
    variables = function.get("Environment", {}).get("Variables", {})
    return SynthesizedFunction(
        handler=str(function["Handler"]), code_dir=code_dir,
        environment={key: value for key, value in variables.items() if isinstance(value, str)},
        timeout_seconds=float(function.get("Timeout", 3)),
        memory_mb=int(function.get("MemorySize", 128)))


def _secret_name(arn: str) -> str:
    """`arn:...:secret:orders-db/master-Ab12Cd` → `orders-db/master` (Secrets Manager adds
    the six-character suffix to the name)."""
    name = arn.split(":secret:", 1)[-1]
    return re.sub(r"-[A-Za-z0-9]{6}$", "", name)


def _cfn_string(value: object) -> str:
    # CloudFormation hands custom resources every scalar property as a string.
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)
