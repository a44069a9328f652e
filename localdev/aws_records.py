"""The AWS records the migration function reaches, created in an emulator (moto) when missing.

Shared by the local deploy, the handler tests and the no-change benchmark, so that all three
give the function the same world: an RDS instance or Aurora cluster record to snapshot, and
a record of the function itself (crhelper's polling adds an EventBridge permission to it).
Each `ensure_*` leaves an existing record alone, so it can run before every deploy.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

ClientFactory = Callable[[str], Any]  # service name → boto3 client


def ensure_database_record(client: ClientFactory, *, instance: str | None = None,
                           cluster: str | None = None, username: str = "app") -> None:
    rds = client("rds")
    credentials = {"MasterUsername": username, "MasterUserPassword": "not-the-real-one"}
    if cluster and not _exists(lambda: rds.describe_db_clusters(DBClusterIdentifier=cluster)):
        rds.create_db_cluster(DBClusterIdentifier=cluster, Engine="aurora-postgresql",
                              **credentials)
    if instance and not _exists(lambda: rds.describe_db_instances(
            DBInstanceIdentifier=instance)):
        rds.create_db_instance(DBInstanceIdentifier=instance, Engine="postgres",
                               DBInstanceClass="db.t4g.micro", AllocatedStorage=20,
                               **credentials)


def ensure_function_record(client: ClientFactory, name: str) -> None:
    lambdas = client("lambda")
    if _exists(lambda: lambdas.get_function(FunctionName=name)):
        return
    iam = client("iam")
    if not _exists(lambda: iam.get_role(RoleName=name)):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")
    role_arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    lambdas.create_function(FunctionName=name, Runtime="python3.12", Role=role_arn,
                            Handler="index.handler", Code={"ZipFile": _placeholder_zip()})


def _placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        # the emulator only records it; invocations go elsewhere (the handler in-process, or
        # the asset through the local Invoke API)
        archive.writestr("index.py", "def handler(event, context):\n    return None\n")
    return buffer.getvalue()


def _exists(describe: Callable[[], object]) -> bool:
    try:
        describe()
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if "NotFound" in code or code == "NoSuchEntity":
            return False
        raise
    return True
