"""CloudFormation's part for the migration custom resource, played locally: the requests it
sends (Create, Update, the rollback's Update or Delete), the polls crhelper schedules, the
events the console would show, and the last deployed properties it remembers."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from localdev.https_recorder import HttpsRecorder
from localdev.lambda_invoke import ACCOUNT_ID
from localdev.local_aws import LocalAwsFiles, StackRecord
from localdev.synthesized import LOGICAL_ID, RESOURCE_TYPE, SynthesizedResource

REGION = "us-east-1"
# Enough for the handler's snapshot waits; each poll is one invocation.
MAX_POLLS = 60
POLL_PAUSE_SECONDS = 0.5
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def shown(path: Path) -> str:
    """A path as the user typed the command: relative to the current folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class LocalClients:
    endpoint: str

    def client(self, name: str, *, read_timeout: float = 60) -> Any:
        return boto3.client(
            name, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(read_timeout=read_timeout, retries={"max_attempts": 1}),
        )


@dataclass
class LocalCloudFormation:
    """Sends the custom resource's requests as CloudFormation does and prints its events."""

    resource: SynthesizedResource
    stack: StackRecord
    files: LocalAwsFiles
    recorder: HttpsRecorder
    aws: LocalClients
    lambda_client: Any
    function_name: str
    state_file: Path
    failure_reason: str = ""  # the failed request's reason, as the console shows it

    def create(self, properties: dict[str, str]) -> int:
        self._set_status("CREATE_IN_PROGRESS")
        self._event("CREATE_IN_PROGRESS")
        answer = self._request("Create", properties)
        if answer["Status"] == "SUCCESS":
            self._event("CREATE_COMPLETE")
            self._save(str(answer["PhysicalResourceId"]), properties)
            return self._done(answer, "CREATE_COMPLETE")
        self.failure_reason = str(answer.get("Reason", ""))
        self._event("CREATE_FAILED", self.failure_reason)
        self._set_status("ROLLBACK_IN_PROGRESS")
        self._event("DELETE_IN_PROGRESS")
        rollback = self._request("Delete", properties,
                                 physical_id=str(answer.get("PhysicalResourceId") or ""))
        self._event("DELETE_COMPLETE" if rollback["Status"] == "SUCCESS" else "DELETE_FAILED",
                    rollback.get("Reason", ""))
        self._stack_event("ROLLBACK_COMPLETE" if rollback["Status"] == "SUCCESS"
                          else "ROLLBACK_FAILED")
        return 1

    def update(self, physical_id: str, old: dict[str, str], new: dict[str, str]) -> int:
        self._set_status("UPDATE_IN_PROGRESS")
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                print(f"  {key}: {old.get(key, '(none)')} → {new.get(key, '(none)')}")
        self._event("UPDATE_IN_PROGRESS")
        answer = self._request("Update", new, physical_id=physical_id, old=old)
        if answer["Status"] == "SUCCESS":
            self._event("UPDATE_COMPLETE")
            self._save(physical_id, new)
            return self._done(answer, "UPDATE_COMPLETE")
        self.failure_reason = str(answer.get("Reason", ""))
        self._event("UPDATE_FAILED", self.failure_reason)
        # CloudFormation's rollback: the previous properties again, during the rollback status
        self._stack_event("UPDATE_ROLLBACK_IN_PROGRESS")
        self._event("UPDATE_IN_PROGRESS")
        rollback = self._request("Update", old, physical_id=physical_id, old=new)
        if rollback["Status"] == "SUCCESS":
            self._event("UPDATE_COMPLETE")
            self._stack_event("UPDATE_ROLLBACK_COMPLETE")
        else:
            self._event("UPDATE_FAILED", rollback.get("Reason", ""))
            self._stack_event("UPDATE_ROLLBACK_FAILED")
        return 1

    def _request(self, request_type: str, properties: dict[str, str], *,
                 physical_id: str = "", old: dict[str, str] | None = None) -> dict[str, Any]:
        """Invoke the function, then fire crhelper's scheduled polls until it answers."""
        before = len(self.recorder.requests)
        event: dict[str, Any] = {
            "RequestType": request_type,
            "ServiceToken": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}",
            "ResponseURL": self.recorder.url(f"/responses/{uuid.uuid4().hex}"),
            "StackId": self.stack.stack_id,
            "RequestId": str(uuid.uuid4()),
            "LogicalResourceId": LOGICAL_ID,
            "ResourceType": RESOURCE_TYPE,
            "ResourceProperties": {"ServiceToken": "local", **properties},
        }
        if physical_id:
            event["PhysicalResourceId"] = physical_id
        if old is not None:
            event["OldResourceProperties"] = {"ServiceToken": "local", **old}
        self._invoke(event)
        events = self.aws.client("events")
        for _ in range(MAX_POLLS):
            if len(self.recorder.requests) > before:
                break
            time.sleep(POLL_PAUSE_SECONDS)
            for rule in events.list_rules()["Rules"]:
                for target in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]:
                    self._invoke(json.loads(target["Input"]))
        if len(self.recorder.requests) == before:
            return {"Status": "FAILED", "Reason": "local deploy: the function never answered; "
                    f"its log is in {shown(self.files.function_log)}"}
        body = self.recorder.requests[before].body
        return dict(body) if isinstance(body, dict) else {"Status": "FAILED",
                                                           "Reason": "unreadable answer"}

    def _invoke(self, event: Mapping[str, Any]) -> None:
        answer = self.lambda_client.invoke(FunctionName=self.function_name,
                                           Payload=json.dumps(event).encode())
        if answer.get("FunctionError"):
            print(f"  the function failed: {answer['Payload'].read().decode()[:500]}",
                  file=sys.stderr)

    def _set_status(self, status: str) -> None:
        """What DescribeStacks answers from now on (the function reads it for rollbacks)."""
        self.stack = StackRecord(self.stack.name, self.stack.stack_id, status,
                                 self.stack.outputs)
        self.files.put_stack(self.stack)

    def _event(self, status: str, reason: str = "") -> None:
        self._print_event(status, RESOURCE_TYPE, LOGICAL_ID, reason)

    def _stack_event(self, status: str) -> None:
        self._set_status(status)
        self._print_event(status, "AWS::CloudFormation::Stack", self.stack.name)

    def _print_event(self, status: str, resource_type: str, logical_id: str,
                     reason: str = "") -> None:
        """One line as the console's events tab shows it."""
        line = (f"{self.stack.name} | {time.strftime('%H:%M:%S')} | {status:<27} | "
                f"{resource_type} | {logical_id} {reason}")
        print(line.rstrip(), flush=True)

    def _done(self, answer: Mapping[str, Any], status: str) -> int:
        self._stack_event(status)
        data = answer.get("Data") or {}
        print(f"State: {data.get('State', '?')}")
        print(f"Revision: {data.get('FromRevision', '?')} → {data.get('ToRevision', '?')} "
              f"({data.get('Applied', '0')} applied)")
        print(f"Snapshot: {data.get('SnapshotId') or 'none'}")
        if data.get("Deferred"):  # contract revisions the engine leaves to a later release
            print(f"Deferred: {data['Deferred']}")
        return 0

    def _save(self, physical_id: str, properties: dict[str, str]) -> None:
        self.state_file.write_text(json.dumps({
            "stack_id": self.stack.stack_id, "physical_resource_id": physical_id,
            "properties": properties}, indent=2) + "\n")


def read_state(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    return state
