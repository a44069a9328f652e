"""A cold start pays only for its path: what the handlers' imports and crhelper's setup load.

What the bundles load under Python 3.12 is checked in tests/cdk_app/test_bundle_contents.py;
these pin the same promises for the repository's code, and crhelper's deferred clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from migration_resource import crhelper_lifecycle
from migration_resource.custom_resource import MigrationResource, Services
from tests.alembic.support import REPO_ROOT

# Loaded only by what a no-change deploy or a first request never does.
DEFERRED = ("alembic", "mako", "pglast", "migration_resource.gate",
            "migration_resource.admin", "migration_resource.commands.dry_run",
            "migration_resource.commands.repair", "migration_resource.commands.downgrade",
            "migration_resource.plan", "migration_resource.trial", "migration_resource.apply",
            "migration_resource.baseline", "migration_resource.history_fix",
            "migration_resource.execution")


def loaded_after_import(module: str) -> list[str]:
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=True, timeout=60,
                            env={**os.environ, "AWS_DEFAULT_REGION": "eu-west-1"})
    modules: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return modules


@pytest.mark.parametrize("module", ["migration_resource.handler", "sample_app.handler"])
def test_importing_a_handler_defers_what_its_first_answer_may_not_need(module: str) -> None:
    modules = loaded_after_import(module)
    assert [name for name in DEFERRED if name in modules] == []
    # No AWS SDK until a secret is read or the deploy changes something, and no crhelper
    # until an event needs its lifecycle: a no-change Update is answered without either.
    assert not [name for name in modules if name.split(".")[0] in ("boto3", "crhelper")]
    assert "botocore.client" not in modules


class CountingBoto3:
    def __init__(self) -> None:
        self.built: list[tuple[str, dict[str, Any]]] = []

    def client(self, name: str, **options: Any) -> object:
        self.built.append((name, options))
        return object()


def services() -> Services:
    return Services(engine_factory=lambda properties: None,  # type: ignore[arg-type,return-value]
                    rds=lambda: None, cloudformation=lambda: None, metrics=None,  # type: ignore[arg-type]
                    ssl_verify="/tmp/ca.pem")


def test_crhelper_builds_its_polling_clients_only_when_it_polls(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN boto3 clients that are counted, and no `sam local` switch set
    fake = CountingBoto3()
    monkeypatch.setattr("boto3.client", fake.client)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_SAM_LOCAL", raising=False)
    # WHEN the custom resource is built, as on a container's first Update
    resource = MigrationResource(services())
    # THEN crhelper built none of its clients, and its switch is as it was
    assert fake.built == []
    assert "AWS_SAM_LOCAL" not in os.environ
    assert not resource._sam_local  # polling is set up as crhelper normally does
    # AND a poll's first use builds each once, with crhelper's own region and verify
    events, again = resource._events_client, resource._events_client
    assert events is again
    resource._lambda_client  # noqa: B018 - the property access is the point
    assert fake.built == [("events", {"region_name": "eu-west-1", "verify": "/tmp/ca.pem"}),
                          ("lambda", {"region_name": "eu-west-1", "verify": "/tmp/ca.pem"})]


def test_a_real_sam_local_run_keeps_crhelpers_local_behaviour(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")
    monkeypatch.setattr("boto3.client", CountingBoto3().client)
    resource = MigrationResource(services())
    assert resource._sam_local == "true"
    assert os.environ["AWS_SAM_LOCAL"] == "true"
    assert crhelper_lifecycle._CRHELPER_LOCAL == "AWS_SAM_LOCAL"
