"""The migration scripts as a graph: heads, ancestry, target validation, upgrade order.

Loading the scripts imports every revision file, which grows with the history; callers that
only need to recognise an up-to-date database compare revision ids instead (see engine.py).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migration_resource.checksums import code_checksum, file_checksum
from migration_resource.settings import EngineSettings, versions_location

if TYPE_CHECKING:
    # Alembic (and Mako, which it imports) load on the first catalogue or config, not with
    # this module: a no-change deploy compares revision ids and never needs them.
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory

HEAD_TARGETS = frozenset({"head", "heads"})
# alembic_version.version_num is VARCHAR(32). Alembic accepts any id without `@`, `-` or `+`
# (its branch and relative notation): `v1.0`, `2024.01_users`. Also refused here: what no id
# needs and SQL or a shell would read (whitespace, quotes, `;`, `,`, `\`, `~`).
_ID = r"[^\s@+\-,;'\"`\\~]{1,32}"
_REVISION_ID = re.compile(rf"^{_ID}$")
# A branch label with a revision, as Alembic writes targets: `billing@head`, `billing@ab12`.
_BRANCH_TARGET = re.compile(rf"^[A-Za-z0-9_.-]{{1,64}}@(head|{_ID})$")
MIN_PREFIX_LENGTH = 4
# The engine's own Alembic environment (env.py, script.py.mako): every engine run uses it, and
# never the team's env.py, which the team's migrations folder may still hold.
ENGINE_ENVIRONMENT = Path(__file__).resolve().parent / "alembic_env"


def to_tuple(value: Any, default: tuple[str, ...] = ()) -> tuple[Any, ...]:
    """alembic.util.to_tuple, imported on first use (only a loaded catalogue calls it)."""
    from alembic.util import to_tuple as alembic_to_tuple  # noqa: PLC0415

    return tuple(alembic_to_tuple(value, default=default))


class ScriptsError(RuntimeError):
    """The migration scripts themselves are wrong (e.g. several heads); not a database state."""


class TargetRevisionError(ValueError):
    """The requested target revision is not one the scripts define."""


def check_target_syntax(target: str) -> str:
    """Refuse anything that cannot be a revision id before any file or database is read."""
    if not isinstance(target, str) or not target.strip():
        raise TargetRevisionError("Target revision is empty; use 'head' or a revision id")
    cleaned = target.strip()
    if cleaned in HEAD_TARGETS:
        return cleaned
    if not _REVISION_ID.match(cleaned) and not _BRANCH_TARGET.match(cleaned):
        shown = cleaned if len(cleaned) <= 40 else cleaned[:40] + "..."
        raise TargetRevisionError(
            f"Target revision {shown!r} is not a revision id (at most 32 characters, without "
            "spaces, quotes or any of @ + - , ; \\ ~) nor a branch target (LABEL@head); use "
            "'head' or an id from `remote_admin.py status`"
        )
    return cleaned


def alembic_config(scripts: EngineSettings | Path) -> Config:
    """The engine's Alembic Config, built in code from the settings (no alembic.ini).

    `script_location` is the engine's own environment (ENGINE_ENVIRONMENT); the team's
    revisions come in through `version_locations`, and what an environment legitimately
    supplies comes from the settings, in `config.attributes`: `naming_convention`,
    `target_metadata_path` (MIGRATION_METADATA) and `ignored_tables`. A bare Path is a
    migrations folder with default settings (no naming convention, no MetaData).
    """
    from alembic.config import Config  # noqa: PLC0415 - see the TYPE_CHECKING block

    ignored: tuple[str, ...] = ()
    if isinstance(scripts, Path):
        folder, convention, metadata = scripts, None, None
    else:
        folder, convention, metadata = (
            scripts.script_location, scripts.naming_convention, scripts.metadata)
        ignored = scripts.ignored_tables
    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", _ini_value(ENGINE_ENVIRONMENT))
    config.set_main_option("version_locations", _ini_value(versions_location(folder)))
    # Revision files, and MIGRATION_METADATA's module, may import the team's code from the
    # project the migrations folder sits in (a Lambda bundle's root is on sys.path already).
    project = folder.parent
    if str(project) not in sys.path:
        config.set_main_option("prepend_sys_path", _ini_value(project))
    config.attributes["configure_logger"] = False
    config.attributes["naming_convention"] = dict(convention) if convention else None
    config.attributes["target_metadata_path"] = metadata
    config.attributes["ignored_tables"] = tuple(ignored)
    return config


def _ini_value(path: Path) -> str:
    # Config options go through ConfigParser's interpolation: a literal % is written %%.
    return str(path).replace("%", "%%")


@dataclass(frozen=True)
class RevisionCatalogue:
    """All revisions of one script directory, loaded once."""

    script: ScriptDirectory
    head: str
    ordered: tuple[str, ...]  # base first, head last (a topological order)
    known: frozenset[str]
    # Alembic's upgrade steps by (current heads, target): the plan and the run ask the same,
    # and on a long history each answer costs as much as running a dozen revisions.
    _steps: dict[tuple[tuple[str, ...], str], list[Any]] = field(
        default_factory=dict, compare=False, repr=False)
    # revision → its file: asked for several times per revision a run applies.
    _paths: dict[str, Path] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, scripts: EngineSettings | Path) -> RevisionCatalogue:
        """The revisions of a migrations folder (`scripts`: the settings naming it, or the
        folder itself)."""
        from alembic.script import ScriptDirectory  # noqa: PLC0415 - see TYPE_CHECKING

        location = versions_location(
            scripts if isinstance(scripts, Path) else scripts.script_location)
        try:
            script = ScriptDirectory.from_config(alembic_config(scripts))
            heads = tuple(script.get_heads())
            walked = [s.revision for s in script.walk_revisions("base", "heads")]
        except Exception as error:  # a revision file's own code runs on import
            raise ScriptsError(
                f"The migration scripts in {location} cannot be loaded: "
                f"{type(error).__name__}: {' '.join(str(error).split())[:300]}; fix the "
                "revision file it names and deploy again (nothing was read or changed)"
            ) from None
        if len(heads) > 1:
            raise ScriptsError(
                f"The migration scripts have {len(heads)} heads ({', '.join(sorted(heads))}); "
                "merge them with `alembic merge heads` and commit the merge revision before "
                "deploying"
            )
        if not heads:
            raise ScriptsError(f"No migration revisions found in {location}")
        ordered = tuple(reversed(walked))
        return cls(script=script, head=heads[0], ordered=ordered, known=frozenset(ordered))

    def is_known(self, revision: str) -> bool:
        return revision in self.known

    def get(self, revision: str) -> Script:
        script = self.script.get_revision(revision)
        assert script is not None
        return script

    def file_path(self, revision: str) -> Path:
        path = self._paths.get(revision)
        if path is None:
            path = self._paths[revision] = Path(self.get(revision).path)
        return path

    def down_revisions(self, revision: str) -> tuple[str, ...]:
        return tuple(to_tuple(self.get(revision).down_revision, default=()))

    def parents(self, revision: str) -> tuple[str, ...]:
        """What the revision stands on: its down revisions, then its `depends_on`."""
        script = self.get(revision)
        return tuple(to_tuple(script.down_revision, default=())) + tuple(
            to_tuple(script.dependencies, default=())
        )

    def checksum(self, revision: str) -> str:
        """What the audit trail records: over the revision's code, not its formatting."""
        return code_checksum(self.file_path(revision))

    def checksum_verdict(self, revision: str, recorded: str) -> str:
        """`same`, `legacy` (a row written before code checksums, over the same file bytes)
        or `edited`."""
        if recorded == self.checksum(revision):
            return "same"
        if recorded == file_checksum(self.file_path(revision)):
            return "legacy"
        return "edited"

    @property
    def versions_dir(self) -> Path:
        return Path(self.script.versions)

    def resolve_target(self, target: str) -> str:
        """`head`/`heads` or a full or unique-prefix revision id → the full id."""
        cleaned = check_target_syntax(target)
        if cleaned in HEAD_TARGETS:
            return self.head
        if cleaned in self.known:
            return cleaned
        if "@" in cleaned:
            return self._resolve_branch_target(cleaned)
        matches = sorted(r for r in self.ordered if r.startswith(cleaned))
        if len(matches) == 1 and len(cleaned) >= MIN_PREFIX_LENGTH:
            return matches[0]
        if len(matches) > 1:
            raise TargetRevisionError(
                f"Target revision {cleaned!r} is ambiguous: it starts {', '.join(matches)}; "
                "give more characters"
            )
        raise TargetRevisionError(
            f"Target revision {cleaned!r} is not defined by the migration scripts "
            f"(head is {self.head}); use 'head' or an id from `remote_admin.py status`"
        )

    def _resolve_branch_target(self, target: str) -> str:
        try:
            found = self.script.get_revisions(target)
        except Exception as error:  # Alembic raises several kinds for a bad label
            raise TargetRevisionError(
                f"Target revision {target!r} is not defined by the migration scripts: "
                f"{' '.join(str(error).split())[:200]}"
            ) from None
        if len(found) != 1 or found[0] is None:
            raise TargetRevisionError(
                f"Target revision {target!r} names {len(found)} revisions; give one"
            )
        return found[0].revision

    def upgrade_order(self, current: tuple[str, ...], target: str) -> tuple[str, ...]:
        """The revisions an upgrade from `current` to `target` runs, in Alembic's own order.

        Merges and several branches allow more than one topological order; the plan, the
        audit rows and the failure report must follow the one Alembic really runs.
        """
        return tuple(step.revision.revision for step in self.upgrade_steps(current, target))

    def upgrade_steps(self, current: tuple[str, ...], target: str) -> list[Any]:
        """Alembic's own steps (RevisionStep) for an upgrade from `current` to `target`."""
        key = (tuple(sorted(current)), target)
        if key not in self._steps:
            # Alembic's own upgrade passes the current heads as a tuple, as here; its
            # annotation says str.
            self._steps[key] = self.script._upgrade_revs(target, current)  # type: ignore[arg-type]
        return self._steps[key]

    def ancestry(self, revisions: tuple[str, ...]) -> frozenset[str]:
        """The revisions and everything they stand on (inclusive)."""
        seen: set[str] = set()
        stack = list(revisions)
        while stack:
            revision = stack.pop()
            if revision in seen:
                continue
            seen.add(revision)
            script = self.get(revision)
            stack.extend(to_tuple(script.down_revision, default=()))
            stack.extend(to_tuple(script.dependencies, default=()))
        return frozenset(seen)

    def in_upgrade_order(self, revisions: frozenset[str]) -> tuple[str, ...]:
        return tuple(r for r in self.ordered if r in revisions)
