"""`make deploy-local`: play CloudFormation's part for the migration custom resource, offline.

    python -m localdev.deploy deploy  [--stage dev] [--cdk-out cdk.out] [--local-dir .local]
    python -m localdev.deploy destroy [--local-dir .local]

What runs for real: the synthesized template's `Custom::DatabaseMigration` properties, the
migration function's code from its asset folder in cdk.out (one process per invocation,
through the local Lambda Invoke API), a PostgreSQL server whose data stays in
`<local-dir>/postgres`, a moto server for Secrets Manager, RDS, EventBridge and Lambda
permissions, and an HTTPS ResponseURL.

What the template says is read by `localdev.synthesized`; CloudFormation's requests, polls
and events are played by `localdev.local_cloudformation`. This module sets the local
environment up and runs one deploy.

Decisions:
- The local AWS (localdev.local_aws: the Invoke API, DescribeStacks and moto behind one
  endpoint) is started by the first deploy and left running, like the deployed stack: the
  admin CLI reaches the function through it between deploys. `destroy` stops it.
- What a deploy must remember lives in files: the database in `<local-dir>/postgres` (one
  database per stage, as each stage has its own), and the last deployed properties in
  `<local-dir>/deploy-state-<stage>.json`; Create, Update or "no changes" is decided from
  them, as CloudFormation decides from the stack's last template.
- CloudFormation updates the function before the custom resource that depends on it, and a
  rollback puts its previous code back; the local deploy does the same with the function
  record the local AWS serves.
- The rollback is played as CloudFormation plays it: an Update back to the old properties
  while the stack is UPDATE_ROLLBACK_IN_PROGRESS (a Delete during ROLLBACK_IN_PROGRESS for a
  failed Create), the status being what DescribeStacks answers the function.
- A stage naming an `existingDatabase` is played against its own local database too (the
  secret under the name of the stage's `secretArn`, the RDS record under its identifier).
  When that database is empty and nothing was deployed yet, it is first made what a team
  adopting the migrations has (localdev.seed_existing: tables and rows, no history); every
  deploy of such a stage then says which baseline the engine verified and how many rows it
  kept, and, as CloudFormation updates the functions that depend on the migration after it,
  deploys and invokes the team's own function (the stack output `TeamFunctionName`).
- The bundle is built for the Lambda runtime (CPython 3.12, manylinux wheels), so it runs under
  a Python 3.12 (LAMBDA_PYTHON, else one on PATH, in pyenv or in uv: localdev.lambda_python),
  with the pinned boto3 installed beside it as the Lambda runtime provides it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import sqlalchemy as sa
from botocore.exceptions import ClientError

from localdev import seed_existing
from localdev.aws_records import ensure_database_record, ensure_function_record
from localdev.https_recorder import HttpsRecorder
from localdev.lambda_invoke import ACCOUNT_ID
from localdev.lambda_python import LambdaPythonMissing, find_lambda_python
from localdev.local_aws import (
    DEFAULT_PORT,
    FunctionRecord,
    LocalAwsError,
    LocalAwsFiles,
    StackRecord,
    ensure_running,
)
from localdev.local_aws import stop as stop_local_aws
from localdev.local_cloudformation import (
    CREDENTIALS,
    REGION,
    LocalClients,
    LocalCloudFormation,
    read_state,
    shown,
)
from localdev.postgres import (
    LOCAL_DATABASE,
    LOCAL_PORT,
    LocalPostgres,
    PostgresUnavailable,
    start_with_database,
)
from localdev.synthesized import (
    FUNCTION_OUTPUT,
    LOGICAL_ID,
    TEAM_FUNCTION_OUTPUT,
    DeployError,
    SynthesizedFunction,
    SynthesizedResource,
    read_synthesized,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The engine's log lines the deploy repeats: what it found, the baseline it verified, what
# it left for a later release.
ENGINE_MESSAGES = ("Migration state:", "Verified baseline:", "Deferred to the next release:")


# -- the local environment ---------------------------------------------------------------------
@dataclass(frozen=True)
class LocalEnvironment:
    local_dir: Path
    postgres_port: int = LOCAL_PORT
    aws_port: int = DEFAULT_PORT
    python: str = ""  # the Lambda runtime's interpreter; "" finds one
    runtime_dir: Path = REPO_ROOT / ".local" / "lambda-runtime-py312"
    # an existing-database stage's first deploy seeds the tables of this revision (None:
    # the sample history's first)
    seed_revision: str | None = None

    def state_file(self, stage: str) -> Path:
        return self.local_dir / f"deploy-state-{stage}.json"

    @property
    def postgres(self) -> LocalPostgres:
        return LocalPostgres(data_dir=self.local_dir / "postgres", port=self.postgres_port)

    @property
    def aws_files(self) -> LocalAwsFiles:
        return LocalAwsFiles.under(self.local_dir)


def stage_database(stage: str) -> str:
    """Each stage its own database on the local server; dev's is `make db-start`'s `app`."""
    if stage == "dev":
        return LOCAL_DATABASE
    return f"{LOCAL_DATABASE}_" + re.sub(r"\W", "_", stage)


def start_database(env: LocalEnvironment, stage: str = "dev") -> None:
    start_with_database(env.postgres, stage_database(stage))


def destroy(env: LocalEnvironment) -> int:
    stopped = stop_local_aws(env.aws_files)
    env.postgres.stop()
    for path in [env.local_dir / "postgres", env.aws_files.folder,
                 *env.local_dir.glob("deploy-state-*.json")]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    print(("stopped the local AWS endpoint and " if stopped else "stopped ")
          + f"the local PostgreSQL server, and removed the local deploy in {env.local_dir}")
    return 0


def lambda_runtime(env: LocalEnvironment) -> tuple[str, Path]:
    """A Python 3.12 and a folder with the pinned boto3, as the Lambda runtime has them."""
    try:
        python = env.python or find_lambda_python()
    except LambdaPythonMissing as error:
        raise DeployError(str(error)) from None
    pin = next(line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
               if line.startswith("boto3=="))
    target = env.runtime_dir / pin.replace("==", "-")
    if not (target / "boto3").is_dir():
        from cdk_app.lambda_platform import PIP_OPTIONS  # noqa: PLC0415 - first run only

        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *PIP_OPTIONS, "--target", str(target),
                        pin], check=True, timeout=600)
    return python, target


# -- the deploy ------------------------------------------------------------------------------
def deploy(resource: SynthesizedResource, stage: str, env: LocalEnvironment, *,
           show_outputs: bool = True) -> int:
    """Play the stack's deploy for the custom resource; 0 when it succeeded or had nothing to do.
    `show_outputs`: print the stack's outputs and how to reach the local AWS endpoint."""
    start_database(env, stage)  # started or reused either way: the local database stays usable
    server = ensure_running(env.aws_files, env.aws_port)
    aws = LocalClients(server.endpoint)
    state_file = env.state_file(stage)
    previous = read_state(state_file)
    adopted = (_ExistingApp.prepare(env, stage, first_deploy=previous is None)
               if resource.existing_secret_name is not None else None)
    stack_id = str(previous["stack_id"]) if previous else (
        f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{resource.stack_name}/{uuid.uuid4()}")
    function_name = f"{resource.stack_name}-MigrationFunction"
    ensure_function_record(aws.client, function_name)
    secret_arn = _ensure_records(aws, resource, env, stage)
    function = _function_record(function_name, resource.function, env,
                                endpoint=server.endpoint, secret_arn=secret_arn)
    files = env.aws_files
    outputs = {FUNCTION_OUTPUT: function_name}
    deployed = files.functions().get(function_name)
    if previous is not None and previous["properties"] == resource.properties:
        # The function's code may still have changed (the sample app's, say): CloudFormation
        # would update it without a custom resource event.
        files.put_function(function)
        if resource.stack_name not in files.stacks():
            files.put_stack(StackRecord(resource.stack_name, stack_id, "UPDATE_COMPLETE",
                                        outputs))
        same_code = deployed is not None and deployed.code_dir == function.code_dir
        print(f"{resource.stack_name} (local): no changes" if same_code else
              f"{resource.stack_name} (local): the function's code changed; "
              f"{LOGICAL_ID}: no changes")
        _update_applications(resource, env, files, aws, outputs, endpoint=server.endpoint,
                             secret_arn=secret_arn)
        if show_outputs:
            _print_outputs(resource.stack_name, outputs, server.endpoint)
        return 0
    print(f"{resource.stack_name} (local): deploying; the function's log is in "
          f"{shown(files.function_log)}")
    files.put_function(function)  # before the custom resource, which depends on it
    log_start = files.function_log.stat().st_size if files.function_log.exists() else 0
    with HttpsRecorder() as recorder:
        shutil.copyfile(recorder.ca_file, env.aws_files.folder / "response-ca.pem")
        cfn = LocalCloudFormation(
            resource=resource, stack=StackRecord(resource.stack_name, stack_id,
                                                 "CREATE_IN_PROGRESS", outputs),
            files=files, recorder=recorder, aws=aws,
            lambda_client=aws.client("lambda", read_timeout=resource.timeout_seconds + 60),
            function_name=function_name, state_file=state_file)
        if previous is None:
            status = cfn.create(resource.properties)
        else:
            status = cfn.update(str(previous["physical_resource_id"]), previous["properties"],
                                resource.properties)
    if status != 0:
        _roll_function_back(files, function, deployed, created=previous is None)
        # The console's reason is short: the whole one says what the database has now
        # (nothing changed, or what was committed before the failure).
        whole = [reason for reason in _failure_reasons(files.function_log, log_start,
                                                        function_name)
                 if reason != cfn.failure_reason]
        print("The deploy failed; the whole reason:" if whole else
              f"The deploy failed; the function's log is in {shown(files.function_log)}")
        for reason in whole:
            print(f"  {reason}")
        outputs.update({output: name for output in resource.applications
                        if (name := application_function_name(resource.stack_name, output))
                        in files.functions()})
    if adopted is not None:
        adopted.report(files.function_log, log_start)
    if status == 0:  # the functions that depend on the migration are updated after it
        _update_applications(resource, env, files, aws, outputs, endpoint=server.endpoint,
                             secret_arn=secret_arn)
    if show_outputs and function_name in files.functions():
        _print_outputs(resource.stack_name, outputs, server.endpoint)
    return status


def _function_record(name: str, resource: SynthesizedFunction, env: LocalEnvironment, *,
                     endpoint: str, secret_arn: str) -> FunctionRecord:
    """The function as the template defines it, run from its asset under the Lambda runtime."""
    python, runtime_path = lambda_runtime(env)
    code_dir = resource.code_dir.resolve()
    return FunctionRecord(
        name=name, handler=resource.handler, code_dir=str(code_dir),
        timeout_seconds=resource.timeout_seconds, memory_mb=resource.memory_mb, python=python,
        env={
            **resource.environment,
            "DATABASE_SECRET_ARN": secret_arn,
            "PYTHONPATH": f"{code_dir}:{runtime_path}",
            "AWS_ENDPOINT_URL": endpoint,
            "CFN_RESPONSE_CA_BUNDLE": str(env.aws_files.folder / "response-ca.pem"),
            **CREDENTIALS,
        },
    )


@dataclass(frozen=True)
class _ExistingApp:
    """An existing-database stage's local database: seeded once, its rows counted."""

    engine: sa.Engine
    tables: list[str]
    before: dict[str, int]

    @classmethod
    def prepare(cls, env: LocalEnvironment, stage: str, *, first_deploy: bool) -> _ExistingApp:
        database = stage_database(stage)
        engine = sa.create_engine(env.postgres.url_for(database), poolclass=sa.NullPool)
        if first_deploy and seed_existing.is_empty(engine):
            revision = seed_existing.seed_like_create_all(env.postgres.url_for(database),
                                                          revision=env.seed_revision)
            counts = seed_existing.count_rows(engine, seed_existing.application_tables(engine))
            print(f"{database} (local): empty, so made what an existing app has: the tables "
                  f"of {revision} without migration history (as db.create_all() leaves them), "
                  f"{', '.join(f'{count} {table}' for table, count in counts.items())}")
        tables = seed_existing.application_tables(engine)
        return cls(engine, tables, seed_existing.count_rows(engine, tables))

    def report(self, log: Path, start: int) -> None:
        """The engine's lines of this deploy (found, verified, deferred), and the rows kept."""
        for message in _engine_messages(log, start):
            print(f"Engine: {message}")
        try:
            print(seed_existing.rows_kept_line(
                self.before, seed_existing.count_rows(self.engine, self.tables)))
        finally:
            self.engine.dispose()


def _engine_messages(log: Path, start: int) -> list[str]:
    """The engine's lines logged since `start` that the deploy repeats (ENGINE_MESSAGES)."""
    messages = []
    for line in _log_lines(log, start):
        try:  # "[function-name] {json}", as the local Invoke API writes them
            record = json.loads(line[line.find("{"):])
        except json.JSONDecodeError:
            continue
        message = str(record.get("message", "")) if isinstance(record, dict) else ""
        if message.startswith(ENGINE_MESSAGES) and message not in messages:
            messages.append(message)
    return messages


def _failure_reasons(log: Path, start: int, function: str) -> list[str]:
    """The whole reasons of the function's requests that failed since `start`, as logged
    before it answers FAILED: an expected failure by the lifecycle, as one JSON line
    (`crhelper_lifecycle`), any other in the runtime's own format with its traceback
    (`[ERROR]<tab>time<tab>request id<tab>message`)."""
    reasons: list[str] = []
    prefix = f"[{function}] "  # the log holds every local function's lines
    for line in _log_lines(log, start):
        if not line.startswith(prefix):
            continue
        text = line.removeprefix(prefix)
        fields = text.split("\t")
        reason = fields[3] if len(fields) == 4 and fields[0] == "[ERROR]" else _json_failure(text)
        if reason is not None and reason not in reasons:
            reasons.append(reason)
    return reasons


def _json_failure(text: str) -> str | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if (isinstance(record, dict) and record.get("level") == "ERROR"
            and str(record.get("name", "")).endswith("crhelper_lifecycle")):
        return str(record.get("message", ""))
    return None


def _log_lines(log: Path, start: int) -> list[str]:
    if not log.exists():
        return []
    with log.open("rb") as file:
        file.seek(start)
        return file.read().decode(errors="replace").splitlines()


def application_function_name(stack_name: str, output: str) -> str:
    """The local name of the function a stack output names: `<stack>-SampleAppFunction`."""
    return f"{stack_name}-{output.removesuffix('Name')}"


def _update_applications(resource: SynthesizedResource, env: LocalEnvironment,
                         files: LocalAwsFiles, aws: LocalClients, outputs: dict[str, str], *,
                         endpoint: str, secret_arn: str) -> None:
    """Deploy the application's functions (they depend on the migration, so CloudFormation
    updates them after it); the team's own function is invoked once, as its first caller
    after the deploy would, and its answer printed."""
    for output, synthesized in resource.applications.items():
        name = application_function_name(resource.stack_name, output)
        record = _function_record(name, synthesized, env, endpoint=endpoint,
                                  secret_arn=secret_arn)
        files.put_function(record)
        outputs[output] = name
        if output == TEAM_FUNCTION_OUTPUT:
            _invoke_once(aws, record)


def _invoke_once(aws: LocalClients, function: FunctionRecord) -> None:
    answer = aws.client("lambda", read_timeout=function.timeout_seconds + 60).invoke(
        FunctionName=function.name, Payload=b"{}")
    payload = answer["Payload"].read().decode()
    if answer.get("FunctionError"):
        print(f"{function.name} failed: {payload[:500]}")
        return
    response = json.loads(payload)
    print(f"{function.name} answered {response.get('statusCode')}: {response.get('body')}")


# What the local AWS gives the function rather than its template: current after a restart.
LOCAL_VARIABLES = ("DATABASE_SECRET_ARN", "AWS_ENDPOINT_URL", "CFN_RESPONSE_CA_BUNDLE")


def _roll_function_back(files: LocalAwsFiles, current: FunctionRecord,
                        before: FunctionRecord | None, *, created: bool) -> None:
    """A failed deploy leaves the function as it was: removed after a failed Create, its
    previous code and settings after a failed Update (when that asset is still in cdk.out)."""
    if created:
        files.remove_function(current.name)
        return
    if before is not None and Path(before.code_dir).is_dir():
        files.put_function(replace(before, env={
            **before.env, **{key: current.env[key] for key in LOCAL_VARIABLES}}))


def _print_outputs(stack_name: str, outputs: Mapping[str, str], endpoint: str) -> None:
    print("\nOutputs:")
    for key, value in outputs.items():
        print(f"{stack_name}.{key} = {value}")
    print(f"\nThe local AWS endpoint stays up for the admin CLI (`make destroy-local` stops it):\n"
          f"  export AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID=testing "
          f"AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION={REGION}\n"
          f"  .venv/bin/python scripts/remote_admin.py --stack-name {stack_name} status")


def _ensure_records(aws: LocalClients, resource: SynthesizedResource, env: LocalEnvironment,
                    stage: str) -> str:
    """The secret RDS would attach (local credentials) and the database record to snapshot;
    created when missing (the local AWS forgets them when it restarts)."""
    secrets = aws.client("secretsmanager")
    name = resource.existing_secret_name or f"{resource.stack_name}-database"
    secret = json.dumps({
        "engine": "postgres", "host": "127.0.0.1", "port": env.postgres_port,
        "username": env.postgres.user, "dbname": stage_database(stage),
        # the local server trusts 127.0.0.1; the driver still wants a password field
        "password": "local-trust-auth",
    })
    try:
        arn = str(secrets.describe_secret(SecretId=name)["ARN"])
        secrets.put_secret_value(SecretId=name, SecretString=secret)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        arn = str(secrets.create_secret(Name=name, SecretString=secret)["ARN"])
    ensure_database_record(aws.client, instance=resource.properties.get("DbInstanceIdentifier"),
                           cluster=resource.properties.get("DbClusterIdentifier"),
                           username=env.postgres.user)
    return arn


# -- the command line ------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.deploy")
    parser.add_argument("command", choices=("deploy", "destroy"))
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--cdk-out", type=Path, default=REPO_ROOT / "cdk.out")
    parser.add_argument("--local-dir", type=Path, default=REPO_ROOT / ".local")
    parser.add_argument("--postgres-port", type=int, default=LOCAL_PORT)
    parser.add_argument("--aws-port", type=int, default=DEFAULT_PORT,
                        help="the local AWS endpoint's port (default: %(default)s)")
    parser.add_argument("--seed-revision", default=None,
                        help="an existing-database stage's empty local database is first given "
                             "the tables of this revision, without history, and some rows "
                             "(default: the sample history's first revision)")
    args = parser.parse_args(argv)
    env = LocalEnvironment(local_dir=args.local_dir.resolve(), postgres_port=args.postgres_port,
                           aws_port=args.aws_port, seed_revision=args.seed_revision)
    if args.command == "destroy":
        return destroy(env)
    try:
        return deploy(read_synthesized(args.cdk_out, args.stage), args.stage, env)
    except (DeployError, LocalAwsError, PostgresUnavailable) as error:
        print(f"deploy-local: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
