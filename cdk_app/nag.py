"""cdk-nag 3.x acknowledgements: CDK's own `Validations.of(scope).acknowledge(...)`."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct


class Checks:
    """`Checks(scope).acknowledge(id="AwsSolutions-RDS11", reason="...")`: one finding of one
    rule on `scope` (IAM5 findings carry their resource: `AwsSolutions-IAM5[Resource::*]`)."""

    def __init__(self, scope: IConstruct) -> None:
        self._validations = Validations.of(scope)

    def acknowledge(self, *, id: str, reason: str) -> None:
        self._validations.acknowledge(Acknowledgment(id=id, reason=reason))


def nag_arn(stack: Stack, service: str, resource: str) -> str:
    """An ARN of `stack`'s account and region as cdk-nag spells it in a finding id:
    `arn:<AWS::Partition>:rds:eu-west-1:123456789012:snapshot:premigrate-*`."""
    return f"arn:<AWS::Partition>:{service}:{stack.region}:{stack.account}:{resource}"
