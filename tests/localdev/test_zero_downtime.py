"""`make deploy-local SCENARIO=zero-downtime` as a user runs it: four releases deployed with
the sample application answering requests throughout.

One run (a module fixture, about a minute): its own folder, PostgreSQL server and local AWS
endpoint; the releases are real checkouts synthesized by the CDK app, the deploys real local
deploys (the migration function from its asset, moto, the HTTPS ResponseURL), the requests
real invocations of the deployed application function. The measure itself is checked on
answers made up here, so that a failed request cannot go unnoticed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.zero_downtime import (
    DROP_USERS_NAME,
    INDEX_DISPLAY_NAMES,
    STEPS,
    UNIQUE_DISPLAY_NAMES,
    USERS_NAME_NULLABLE,
    Answer,
    unable_to_serve_seconds,
)
from tests.alembic.support import REPO_ROOT
from tests.localdev.test_deploy import events, lambda_python_available


@pytest.fixture(scope="module")
def scenario() -> Iterator[subprocess.CompletedProcess[str]]:
    lambda_python_available()
    folder = Path(tempfile.mkdtemp(prefix="zero-downtime-"))
    folder.chmod(0o755)  # the postgres user must reach the data folder
    try:
        yield subprocess.run(
            [sys.executable, "-m", "localdev.zero_downtime", "--local-dir", str(folder)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def step(result: subprocess.CompletedProcess[str], number: int) -> str:
    """The output of one step, from its heading to the next."""
    parts = re.split(r"^== ", result.stdout, flags=re.MULTILINE)
    return next(part for part in parts if part.startswith(f"{number}. "))


def step_events(result: subprocess.CompletedProcess[str], number: int) -> list[str]:
    return events(subprocess.CompletedProcess(result.args, 0, step(result, number), ""))


def test_every_step_goes_as_expected_and_the_application_never_stops(
        scenario: subprocess.CompletedProcess[str]) -> None:
    output = scenario.stdout + scenario.stderr
    assert scenario.returncode == 0, output
    expected = [line for line in scenario.stdout.splitlines() if line.startswith("Expected: ")]
    assert len(expected) == sum(len(one.expected) for one in STEPS)
    assert all(line.endswith(": yes") for line in expected), output
    assert "Unable to serve: 0.0 s of " in scenario.stdout
    requests = re.search(r"^Requests: (\d+), (\d+) answered \((.*)\)", scenario.stdout,
                         re.MULTILINE)
    assert requests is not None, output
    assert requests[1] == requests[2] and int(requests[1]) >= 8
    assert [part.split(" ")[0] for part in requests[3].split(", ")] == ["N-1", "N", "N+1"]
    kept = re.search(r"^Users created by those requests: (\d+), (\d+) still there",
                     scenario.stdout, re.MULTILINE)
    assert kept is not None and kept[1] == kept[2] and int(kept[1]) > 0
    print("MEASURED zero-downtime scenario: "
          + next(line for line in scenario.stdout.splitlines() if line.startswith("Requests: "))
          + "; " + next(line for line in scenario.stdout.splitlines()
                        if line.startswith("Unable to serve: ")))


def test_release_n_applies_the_expand_revision_and_defers_the_drop(
        scenario: subprocess.CompletedProcess[str]) -> None:
    lines = step(scenario, 2).splitlines()
    assert step_events(scenario, 2) == ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE",
                                        "UPDATE_COMPLETE"]
    assert f"Revision: 25d7c6ee3024 → {USERS_NAME_NULLABLE} (1 applied)" in lines
    assert any(line.startswith("Snapshot: premigrate-") for line in lines)
    assert f"Deferred: {DROP_USERS_NAME}" in lines
    # the release reaches the resource through its code's ReleaseId too
    assert any(line.startswith("  ReleaseId: ") for line in lines)


def test_release_n_plus_1_runs_the_drop_first_then_fails_and_the_old_code_serves(
        scenario: subprocess.CompletedProcess[str]) -> None:
    output = step(scenario, 3)
    assert step_events(scenario, 3) == [
        "UPDATE_IN_PROGRESS", "UPDATE_FAILED", "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"]
    engine = output.split("The deploy failed; the whole reason:\n", 1)[1].splitlines()[0]
    assert (f"revision {UNIQUE_DISPLAY_NAMES} " in engine
            and "failed after 1 of 2 revisions: UniqueViolation: could not create unique index"
            in engine and f"Committed before it in this run: {DROP_USERS_NAME}" in engine
            and f"The database is at revision {DROP_USERS_NAME}" in engine), engine
    assert re.search(r"^Requests during this step: (\d+), \1 answered \(N \d+\)$", output,
                     re.MULTILINE), output


def test_release_n_plus_1_fixed_applies_and_its_code_goes_live(
        scenario: subprocess.CompletedProcess[str]) -> None:
    lines = step(scenario, 4).splitlines()
    assert f"Revision: {DROP_USERS_NAME} → {INDEX_DISPLAY_NAMES} (1 applied)" in lines
    assert not any(line.startswith("Deferred: ") for line in lines)


def answer(started: float, status: int, seconds: float = 0.5) -> Answer:
    return Answer(started, seconds, "GET /tasks", status, "N")


def test_the_measure_counts_from_a_failed_request_to_the_next_served_one() -> None:
    assert unable_to_serve_seconds([answer(0, 200), answer(1, 200)]) == 0.0
    # two failures in a row, then a success 3 s after the first failure
    assert unable_to_serve_seconds(
        [answer(0, 200), answer(1, 503), answer(2, 0), answer(4, 201)]) == 3.0
    # a failure at the end counts until that request ended; the order of arrival does not
    assert unable_to_serve_seconds([answer(5, 502, 1.5), answer(0, 200)]) == 1.5
