"""Reading IAM statements out of a synthesized template."""

from __future__ import annotations

import json
from typing import Any

from tests.cdk_app.support import Synth


def statements_of_role(synth: Synth, role_prefix: str) -> list[dict[str, Any]]:
    """Every statement of every AWS::IAM::Policy attached to the role whose logical id
    starts with `role_prefix`."""
    found = []
    for policy in synth.resources("application", "AWS::IAM::Policy").values():
        roles = [ref["Ref"] for ref in policy["Properties"]["Roles"]]
        if any(role.startswith(role_prefix) for role in roles):
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def actions(statement: dict[str, Any]) -> list[str]:
    value = statement["Action"]
    return [value] if isinstance(value, str) else list(value)


def resources(statement: dict[str, Any]) -> list[Any]:
    value = statement["Resource"]
    return value if isinstance(value, list) else [value]


def flat(value: Any) -> str:
    """A resource as one string: Fn::Join parts concatenated, references as <Ref>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return "".join(flat(part) for part in value["Fn::Join"][1])
    if "Ref" in value:
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    if "Fn::ImportValue" in value:
        return f"<import:{value['Fn::ImportValue']}>"
    return json.dumps(value)


def by_action(statements: list[dict[str, Any]]) -> dict[str, list[str]]:
    granted: dict[str, list[str]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "Condition" not in statement or statement["Condition"]
        for action in actions(statement):
            granted.setdefault(action, []).extend(flat(r) for r in resources(statement))
    return granted
