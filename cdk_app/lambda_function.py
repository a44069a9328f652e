"""What every Lambda of this app shares: Python in the VPC with its own log group and role.

Both functions (migration and sample application) run on the same runtime, each with its
own bundle (`bundling.py`), in the same subnets, with the database secret, the stage,
Powertools' settings, a log group with the stage's retention and a role that writes only
there (`lambda_role.py`). A construct calls `vpc_python_function` with what is its own (code,
handler, timeout, memory, extra variables); the children keep the ids `Logs`, `Role` and
`Function` inside that construct.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk_app.bundling import ARCHITECTURE, RUNTIME
from cdk_app.lambda_role import vpc_lambda_role
from cdk_app.nag import Checks
from migration_resource.metric_names import NAMESPACE


@dataclass(frozen=True)
class FunctionNetwork:
    """Where a function runs: subnets of a VPC, with a security group that reaches the
    database (and AWS's APIs)."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.ISecurityGroup

    def selected_subnets(self) -> list[ec2.ISubnet]:
        selection = self.subnets
        return list(self.vpc.select_subnets(
            availability_zones=selection.availability_zones, one_per_az=selection.one_per_az,
            subnet_filters=selection.subnet_filters,
            subnet_group_name=selection.subnet_group_name, subnets=selection.subnets,
            subnet_type=selection.subnet_type).subnets)


@dataclass(frozen=True)
class VpcFunction:
    log_group: logs.LogGroup
    role: iam.Role
    function: lambda_.Function


def powertools_environment(service: str) -> dict[str, str]:
    return {
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }


def vpc_python_function(
    scope: Construct, *, code: lambda_.Code, network: FunctionNetwork, handler: str,
    description: str, role_description: str, service: str,
    database_secret_arn: str, stage_kind: str, environment: Mapping[str, str],
    timeout: Duration, memory_mb: int, log_retention: logs.RetentionDays,
    log_removal_policy: RemovalPolicy, runtime_reason: str,
    reserved_concurrent_executions: int | None = None,
) -> VpcFunction:
    """The log group, role and function, in `scope`; `environment` adds to the shared variables."""
    log_group = logs.LogGroup(scope, "Logs", retention=log_retention,
                              removal_policy=log_removal_policy)
    role = vpc_lambda_role(scope, "Role", log_group=log_group,
                           subnets=network.selected_subnets(),
                           security_group=network.security_group, description=role_description)
    function = lambda_.Function(
        scope, "Function",
        description=description,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        handler=handler,
        code=code,
        role=role,
        timeout=timeout,
        memory_size=memory_mb,
        reserved_concurrent_executions=reserved_concurrent_executions,
        vpc=network.vpc,
        vpc_subnets=network.subnets,
        security_groups=[network.security_group],
        log_group=log_group,
        environment={
            "DATABASE_SECRET_ARN": database_secret_arn,
            "STAGE": stage_kind,
            **environment,
            **powertools_environment(service),
        },
    )
    # cdk-nag wants the latest runtime; each function says why it stays on this one.
    Checks(function).acknowledge(id="AwsSolutions-L1", reason=runtime_reason)
    return VpcFunction(log_group=log_group, role=role, function=function)
