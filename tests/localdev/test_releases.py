"""Release checkouts: the project as an earlier or later release had it (no synth here: the
zero-downtime scenario synthesizes and deploys them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localdev.releases import Release, ReleaseError, RevisionFile, checkout
from localdev.zero_downtime import RELEASES
from tests.alembic.support import HEAD, REPO_ROOT, USERS_NAME_NULLABLE


def revisions_in(project: Path) -> set[str]:
    return {path.name.split("_")[2] for path in (project / "alembic" / "versions").glob("*.py")}


def test_the_previous_release_has_its_own_code_and_a_shorter_history(tmp_path: Path) -> None:
    # WHEN release N-1 is checked out
    previous = checkout(RELEASES[0], tmp_path / "n-minus-1")
    # THEN its code still writes users.name, its history stops before the column was made
    # nullable, and it says which release it is
    assert "name: Mapped[str] = mapped_column(String(200))" in (
        previous / "sample_app" / "models.py").read_text()
    assert 'name=display_name or email.split("@")[0]' in (
        previous / "sample_app" / "handler.py").read_text()
    assert USERS_NAME_NULLABLE not in revisions_in(previous)
    assert len(revisions_in(previous)) == len(revisions_in(REPO_ROOT)) - 2
    assert "RELEASE = 'N-1'" in (previous / "sample_app" / "release.py").read_text()
    # AND this repository's own files are untouched
    assert "Release N-1 still writes" not in (REPO_ROOT / "sample_app" / "models.py").read_text()


def test_a_later_release_brings_its_revision_on_top(tmp_path: Path) -> None:
    later = checkout(RELEASES[3], tmp_path / "n-plus-1")
    assert revisions_in(later) == revisions_in(REPO_ROOT) | {"c2d8f0b3e671"}
    assert (later / "app.py").is_file() and (later / "cdk.json").is_file()
    assert HEAD in revisions_in(later)


def test_a_patch_that_no_longer_applies_is_a_clear_error(tmp_path: Path) -> None:
    stale = tmp_path / "stale.patch"
    stale.write_text(
        "diff --git a/sample_app/models.py b/sample_app/models.py\n"
        "--- a/sample_app/models.py\n+++ b/sample_app/models.py\n"
        "@@ -1,1 +1,1 @@\n-a line that is not there\n+another\n")
    release = Release("old", folder="old", head=HEAD, patch=stale)
    with pytest.raises(ReleaseError, match=r"stale.patch no longer applies to this repository's "
                                           r"code \(error: patch failed: .*refresh it"):
        checkout(release, tmp_path / "old")


def test_a_head_the_history_does_not_have_is_a_clear_error(tmp_path: Path) -> None:
    release = Release("x", folder="x", head="0123456789ab",
                      revisions=(RevisionFile(Path("unused"), "unused.py"),))
    with pytest.raises(ReleaseError, match="has no revision 0123456789ab"):
        checkout(release, tmp_path / "x")
