"""Pre-migration snapshots of the RDS instance or Aurora cluster, over an RDS client passed in.

Starting a snapshot and waiting for it are separate steps: a large database takes longer to
snapshot than one Lambda run, so the caller polls ``snapshot_status`` (crhelper's polling)
instead of blocking on a waiter here.

Every AWS failure becomes a ``SnapshotError`` whose message fits a CloudFormation reason: what
failed, the AWS error code, what to do. AWS's own message (which may name ARNs of roles,
keys or secrets) goes only to the log, with ARNs masked.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

# Constant so the Lambda's IAM policy can allow rds:CreateDBSnapshot on `snapshot:premigrate-*`
# (and `cluster-snapshot:premigrate-*`) only.
SNAPSHOT_PREFIX = "premigrate-"
# DB snapshot identifiers may have 255 characters but DB *cluster* snapshot identifiers only
# 63; one limit for both keeps the naming identical across instance and Aurora.
SNAPSHOT_ID_MAX_LENGTH = 63
REVISION_CHARS = 12
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_ARN = re.compile(r"arn:aws[a-zA-Z-]*:[^\s\"',]*")

SnapshotKind = Literal["instance", "cluster"]
INSTANCE_PROPERTY = "DbInstanceIdentifier"
CLUSTER_PROPERTY = "DbClusterIdentifier"

# AWS error code -> the one thing the operator should do. The instance and cluster APIs spell
# codes differently ("...Fault", "...Exception"), so codes are looked up without that suffix.
_ADVICE = {
    "SnapshotQuotaExceeded": "delete old manual snapshots or raise the RDS manual snapshot "
                             "quota, then deploy again",
    "InvalidDBInstanceState": "wait until the database is available, then deploy again",
    "InvalidDBClusterState": "wait until the cluster is available, then deploy again",
    "DBInstanceNotFound": f"check the {INSTANCE_PROPERTY} property of the custom resource",
    "DBClusterNotFound": f"check the {CLUSTER_PROPERTY} property of the custom resource",
    "DBSnapshotAlreadyExists": "a snapshot with this name exists already; deploy again",
    "DBClusterSnapshotAlreadyExists": "a snapshot with this name exists already; deploy again",
    "AccessDenied": "allow the migration Lambda rds:CreateDB(Cluster)Snapshot and "
                    "rds:AddTagsToResource on premigrate-* snapshots",
    "KMSKeyNotAccessible": "allow the migration Lambda to use the database's KMS key, "
                           "then deploy again",
    "Throttling": "deploy again in a few minutes",
}
_CODE_SUFFIX = re.compile(r"(Fault|Exception)$")
_DEFAULT_ADVICE = "check the database in the RDS console, then deploy again"


class SnapshotError(RuntimeError):
    """A snapshot step failed; the message is short and safe to show in CloudFormation."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SnapshotTarget:
    """What to snapshot: an RDS DB instance or an Aurora DB cluster."""

    kind: SnapshotKind
    identifier: str

    def __post_init__(self) -> None:
        if self.kind not in ("instance", "cluster"):
            raise SnapshotError(f"snapshot target kind must be instance or cluster, "
                                f"got {self.kind[:40]!r}")
        if not self.identifier:
            raise SnapshotError("the database identifier to snapshot is empty")

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any]) -> SnapshotTarget:
        """Read exactly one of DbInstanceIdentifier / DbClusterIdentifier."""
        instance = str(properties.get(INSTANCE_PROPERTY) or "").strip()
        cluster = str(properties.get(CLUSTER_PROPERTY) or "").strip()
        if instance and cluster:
            raise SnapshotError(f"set either {INSTANCE_PROPERTY} or {CLUSTER_PROPERTY}, not both")
        if instance:
            return cls("instance", instance)
        if cluster:
            return cls("cluster", cluster)
        raise SnapshotError(
            f"set {INSTANCE_PROPERTY} (RDS instance) or {CLUSTER_PROPERTY} (Aurora cluster) "
            "so the database can be snapshotted"
        )

    @property
    def description(self) -> str:
        return f"DB {self.kind} {self.identifier!r}"


def snapshot_identifier(stack_name: str, revision: str, now: datetime) -> str:
    """``premigrate-<stack>-<revision12>-<YYYYMMDDHHMMSS>``, valid for both snapshot APIs.

    Lowercase (RDS stores identifiers lowercased, so what we compare later is what RDS shows),
    letters/digits/single hyphens, at most 63 characters. A stack name too long to fit is cut
    and given a short hash of the full name, so two long names sharing a start stay distinct.
    A naive ``now`` is taken as UTC.
    """
    moment = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    timestamp = moment.strftime(TIMESTAMP_FORMAT)
    rev = _sanitize(revision)[:REVISION_CHARS].strip("-")
    stack = _sanitize(stack_name)
    fixed = [part for part in (rev, timestamp) if part]
    # prefix + "-".join(stack, *fixed): the prefix carries its own hyphen
    room = SNAPSHOT_ID_MAX_LENGTH - len(SNAPSHOT_PREFIX) - sum(len(p) + 1 for p in fixed)
    if len(stack) > room:
        digest = hashlib.sha256(stack_name.encode()).hexdigest()[:6]
        stack = f"{stack[: room - len(digest) - 1].strip('-')}-{digest}"
    return SNAPSHOT_PREFIX + "-".join(part for part in (stack, *fixed) if part)


def _sanitize(text: str) -> str:
    return _NOT_ALNUM.sub("-", text.lower()).strip("-")


def database_status(rds: Any, target: SnapshotTarget) -> str:
    """The instance's ``DBInstanceStatus`` or the cluster's ``Status`` (``available``, ...)."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see _snapshot_error

    try:
        if target.kind == "instance":
            found = rds.describe_db_instances(DBInstanceIdentifier=target.identifier)
            return str(found["DBInstances"][0]["DBInstanceStatus"])
        found = rds.describe_db_clusters(DBClusterIdentifier=target.identifier)
        return str(found["DBClusters"][0]["Status"])
    except (ClientError, BotoCoreError) as error:
        raise _snapshot_error(f"Cannot read the status of {target.description}", error) from None


def start_snapshot(
    rds: Any, target: SnapshotTarget, snapshot_id: str, tags: Mapping[str, str]
) -> None:
    """Ask RDS for a manual snapshot (it continues after this returns); tags are attached."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see _snapshot_error

    tag_list = [{"Key": key, "Value": value} for key, value in tags.items()]
    try:
        if target.kind == "instance":
            rds.create_db_snapshot(DBInstanceIdentifier=target.identifier,
                                   DBSnapshotIdentifier=snapshot_id, Tags=tag_list)
        else:
            rds.create_db_cluster_snapshot(DBClusterIdentifier=target.identifier,
                                           DBClusterSnapshotIdentifier=snapshot_id,
                                           Tags=tag_list)
    except (ClientError, BotoCoreError) as error:
        raise _snapshot_error(f"Cannot snapshot {target.description}", error) from None


def snapshot_status(rds: Any, target: SnapshotTarget, snapshot_id: str) -> str | None:
    """The snapshot's ``Status`` (``creating``, ``available``, ...), or None if it does not
    exist (not started yet, or deleted)."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - see _snapshot_error

    try:
        if target.kind == "instance":
            found = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)
            snapshots = found.get("DBSnapshots", [])
        else:
            found = rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=snapshot_id)
            snapshots = found.get("DBClusterSnapshots", [])
    except ClientError as error:
        if _code(error) in ("DBSnapshotNotFound", "DBSnapshotNotFoundFault",
                            "DBClusterSnapshotNotFoundFault"):
            return None
        raise _snapshot_error(f"Cannot read snapshot {snapshot_id}", error) from None
    except BotoCoreError as error:
        raise _snapshot_error(f"Cannot read snapshot {snapshot_id}", error) from None
    return str(snapshots[0]["Status"]) if snapshots else None


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _snapshot_error(what: str, error: ClientError | BotoCoreError) -> SnapshotError:
    # botocore loads with the first snapshot call: a no-change deploy never makes one, and
    # its import is a sixth of a cold start.
    from botocore.exceptions import ClientError  # noqa: PLC0415

    if isinstance(error, ClientError):
        code = _code(error) or "ClientError"
        advice = _ADVICE.get(_CODE_SUFFIX.sub("", code), _DEFAULT_ADVICE)
    else:  # no answer from the RDS API at all (endpoint, network, timeout)
        code = type(error).__name__
        advice = "check the Lambda's network path to the RDS API, then deploy again"
    logger.error("%s: %s", what, _ARN.sub("<arn>", str(error)))
    return SnapshotError(f"{what} ({code}); nothing was changed. {advice[:1].upper()}{advice[1:]}",
                         code)
