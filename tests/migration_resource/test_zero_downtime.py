"""Zero downtime by construction: three releases of the sample application, deployed through
the real custom resource handler, with the application serving requests throughout.

Real parts: PostgreSQL, the moto server (RDS snapshots, CloudFormation, EventBridge), the HTTPS
recorder as the ResponseURL, the sample application's real handler (its schema check, its
users and tasks routes). The release before N is a small client of its own: the sample
application's code of that release wrote and read users.name, which this repository's code no
longer does.

- release N-1 is live, its code writing users.name;
- release N stops using users.name and brings two revisions: users.name nullable (expand) and
  its drop (contract). Its deploy applies the first and defers the drop;
- release N+1 (a new ReleaseId, no new revision): its deploy runs the drop first, after a
  snapshot;
- release N+2 brings a revision that fails: the deploy fails after the drop ran, the stack
  rolls back, and release N's code serves on.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from migration_resource import handler as handler_module
from migration_resource import observability
from sample_app import handler as app
from tests.alembic.support import DROP_USERS_NAME, INDEX_EMAIL_DOMAIN, USERS_NAME_NULLABLE
from tests.migration_resource.support import SAMPLE_SCRIPTS, version_rows
from tests.migration_resource.test_handler import (
    Deploy,
    deploy,  # noqa: F401 - the fixture
    snapshots,
)
from tests.migration_resource.test_handler import live as live_release

BROKEN = "9b1e4f7a2c60"


@dataclass
class Traffic:
    """Requests to whichever code is live, every few milliseconds, from a thread."""

    db: sa.Engine
    live: str = "N-1"
    results: list[tuple[float, str, bool, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            release = self.live
            started = time.monotonic()
            try:
                ok, note = REQUESTS[release](self)
            except Exception as error:  # a failed request is what this test measures
                ok, note = False, f"{type(error).__name__}: {error}"
            self.results.append((started, release, ok, note))
            time.sleep(0.01)

    def failures(self) -> list[tuple[float, str, bool, str]]:
        return [one for one in self.results if not one[2]]

    def unable_to_serve_seconds(self) -> float:
        """The time from each failed request to the next request that succeeded."""
        down, since = 0.0, None
        for started, _, ok, _ in self.results:
            if not ok and since is None:
                since = started
            elif ok and since is not None:
                down += started - since
                since = None
        return down


def previous_release(traffic: Traffic) -> tuple[bool, str]:
    """Release N-1's code: it still wrote and read users.name."""
    email = f"{uuid.uuid4().hex[:12]}@old.example.com"
    with traffic.db.begin() as connection:
        connection.execute(sa.text("INSERT INTO users (email, name, display_name) "
                                   "VALUES (:e, 'Old', 'Old')"), {"e": email})
        name = connection.execute(sa.text("SELECT name FROM users WHERE email = :e"),
                                  {"e": email}).scalar_one()
    return name == "Old", "N-1 wrote and read users.name"


def current_release(traffic: Traffic) -> tuple[bool, str]:
    """Release N's code (this repository's sample application): create a user, count tasks."""
    created = call("POST", "/users", {"email": f"{uuid.uuid4().hex[:12]}@new.example.com",
                                      "display_name": "New"})
    counted = call("GET", "/tasks")
    return created[0] == 201 and counted[0] == 200, f"{created} {counted}"


REQUESTS: dict[str, Callable[[Traffic], tuple[bool, str]]] = {
    "N-1": previous_release, "N": current_release}


def call(method: str, path: str, body: object = None) -> tuple[int, dict[str, Any]]:
    event = {"resource": path, "path": path, "httpMethod": method, "headers": {},
             "requestContext": {"stage": "prod", "requestId": uuid.uuid4().hex},
             "body": None if body is None else json.dumps(body), "isBase64Encoded": False}
    response = app.handler(event, type("Context", (), {"function_name": "sample-app",
                                                       "aws_request_id": "r"})())
    return int(response["statusCode"]), json.loads(str(response["body"]))


@pytest.fixture
def traffic(db: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Traffic]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "sample-app-zero-downtime")
    monkeypatch.delenv("AUTO_MIGRATE", raising=False)
    app.reset()
    observability.reset()
    running = Traffic(db)
    yield running
    running.stop.set()
    app.reset()


def live(target: str, release: str) -> dict[str, str]:
    return {**live_release(target), "ReleaseId": release}


def test_three_releases_never_stop_the_application(
    deploy: Deploy, db: sa.Engine, traffic: Traffic, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    tmp_path: Path,
) -> None:
    deploy.properties.update(Stage="production", ReleaseId="N-1")
    # GIVEN release N-1 live, its code serving
    first = deploy.send(deploy.event("Create", properties={"TargetRevision": INDEX_EMAIL_DOMAIN}))
    assert first["Status"] == "SUCCESS", first["Reason"]
    thread = threading.Thread(target=traffic.run)
    thread.start()
    try:
        time.sleep(0.3)
        # WHEN release N deploys: the schema first, while N-1's code still serves
        answer = deploy.send(deploy.event(
            "Update", properties={"ReleaseId": "N"},
            OldResourceProperties=live(INDEX_EMAIL_DOMAIN, "N-1")))
        # THEN the expand revision ran, the drop waits for the next release
        assert answer["Status"] == "SUCCESS", answer["Reason"]
        assert (answer["Data"]["Applied"], answer["Data"]["Deferred"]) == (
            "1", DROP_USERS_NAME)
        assert version_rows(db) == [USERS_NAME_NULLABLE] and snapshots(deploy) != []
        time.sleep(0.3)
        traffic.live = "N"  # CloudFormation updates the function after the resource
        time.sleep(0.5)

        # WHEN release N+1 deploys (a new release id, no new revision)
        answer = deploy.send(deploy.event(
            "Update", properties={"ReleaseId": "N+1"},
            OldResourceProperties=live(DROP_USERS_NAME, "N")))
        # THEN the drop runs first, after its snapshot, while N's code serves
        assert answer["Status"] == "SUCCESS", answer["Reason"]
        assert (answer["Data"]["Applied"], answer["Data"]["Deferred"]) == ("1", "")
        assert answer["Data"]["SnapshotId"] in snapshots(deploy)
        assert version_rows(db) == [DROP_USERS_NAME]
        time.sleep(0.5)

        # WHEN release N+2 brings a revision that fails, and the stack rolls back
        scripts = tmp_path / "n-plus-2"
        shutil.copytree(SAMPLE_SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
        (scripts / "versions" / f"{BROKEN}_broken.py").write_text(
            f'revision = "{BROKEN}"\ndown_revision = "{DROP_USERS_NAME}"\n\n\n'
            'from alembic import op\n\n\ndef upgrade() -> None:\n'
            '    op.execute("SELECT 1 / 0 AS release_n_plus_2_is_broken")\n\n\n'
            'def downgrade() -> None:\n    pass\n')
        monkeypatch.setenv("ALEMBIC_SCRIPT_LOCATION", str(scripts))
        handler_module._resource = None
        failed = deploy.send(deploy.event(
            "Update", properties={"TargetRevision": BROKEN, "ReleaseId": "N+2"},
            OldResourceProperties=live(DROP_USERS_NAME, "N+1")))
        assert failed["Status"] == "FAILED" and "division by zero" in failed["Reason"]
        rolled_back = deploy.send(deploy.event(
            "Update", properties={"TargetRevision": DROP_USERS_NAME, "ReleaseId": "N+1"},
            OldResourceProperties=live(BROKEN, "N+2")))
        assert rolled_back["Status"] == "SUCCESS"
        time.sleep(0.5)
    finally:
        traffic.stop.set()
        thread.join(10)
    # THEN the application answered every request, at every step
    served = [one for one in traffic.results if one[2]]
    print(f"MEASURED zero downtime: {len(traffic.results)} requests, {len(served)} served, "
          f"unable to serve {traffic.unable_to_serve_seconds():.3f} s")
    assert traffic.failures() == []
    assert {release for _, release, _, _ in traffic.results} == {"N-1", "N"}
    assert version_rows(db) == [DROP_USERS_NAME]
