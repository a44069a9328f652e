"""A stage that names an existing database (cdk.json `existing`): only the application stack,
nothing that can touch the database, the committed VPC lookup, snapshots of that database."""

from __future__ import annotations

import json
import subprocess

from cdk_app.composition import stack_names
from tests.alembic.support import REPO_ROOT
from tests.cdk_app.iam import by_action, statements_of_role
from tests.cdk_app.support import SHARED_OUTDIR, Synth

CDK = REPO_ROOT / "node_modules" / ".bin" / "cdk"
ARN = "arn:<AWS::Partition>:rds:eu-west-1:123456789012"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:orders-db/master-Ab12Cd"
# Resource types that could create, change or delete a database, its secret or its network.
DATABASE_SIDE = ("AWS::RDS::", "AWS::SecretsManager::", "AWS::EC2::")


def test_only_the_application_stack_is_deployed(existing: Synth) -> None:
    assert existing.composition.database is None
    assert set(existing.templates) == {"application"}
    database_name, application_name = stack_names(existing.settings)
    stacks = {name for name, artifact in existing.manifest["artifacts"].items()
              if artifact["type"] == "aws:cloudformation:stack"}
    assert stacks == {application_name}
    assert database_name not in existing.manifest["artifacts"][application_name].get(
        "dependencies", [])


def test_nothing_in_the_template_can_touch_the_database(
    existing: Synth, variants: dict[str, Synth],
) -> None:
    for synth in (existing, variants["existing-cluster"]):
        types = {r["Type"] for r in synth.templates["application"]["Resources"].values()}
        assert not [t for t in types if t.startswith(DATABASE_SIDE)], types
        for prefix in ("MigrationRole", "SampleAppRole"):
            granted = by_action(statements_of_role(synth, prefix))
            assert not [action for action in granted if action.startswith(
                ("rds:Delete", "rds:Modify", "rds:Restore", "rds:Stop", "rds:Reboot",
                 "secretsmanager:Put", "secretsmanager:Update", "ec2:Authorize",
                 "ec2:Revoke"))]


def test_the_vpc_lookup_comes_from_the_committed_context(existing: Synth) -> None:
    # no lookup left to make: synth ran offline with the committed cdk.context.json
    assert not existing.manifest.get("missing")
    lookups = json.loads((REPO_ROOT / "cdk.context.json").read_text())
    assert any(key.startswith("vpc-provider:") and "vpc-0a1b2c3d4e5f67890" in key
               for key in lookups)
    configured = existing.settings.existing_database
    assert configured is not None
    for function in existing.resources("application", "AWS::Lambda::Function").values():
        config = function["Properties"]["VpcConfig"]
        assert config["SubnetIds"] == list(configured.subnet_ids)
        assert config["SecurityGroupIds"] == [configured.security_group_id]


def test_the_custom_resource_snapshots_the_existing_instance(existing: Synth) -> None:
    properties = existing.templates["application"]["Resources"]["DatabaseMigration"][
        "Properties"]
    assert properties["DbInstanceIdentifier"] == "orders-db"
    assert properties["SnapshotBeforeMigrate"] is True
    granted = by_action(statements_of_role(existing, "MigrationRole"))
    database, snapshots = f"{ARN}:db:orders-db", f"{ARN}:snapshot:premigrate-*"
    assert sorted(granted["rds:CreateDBSnapshot"]) == sorted([database, snapshots])
    assert granted["rds:AddTagsToResource"] == [snapshots]
    assert granted["rds:DescribeDBInstances"] == [database]
    assert sorted(granted["rds:DescribeDBSnapshots"]) == sorted([database, snapshots])
    assert granted["secretsmanager:GetSecretValue"] == [SECRET_ARN]
    app = by_action(statements_of_role(existing, "SampleAppRole"))
    assert app["secretsmanager:GetSecretValue"] == [SECRET_ARN]
    outputs = existing.templates["application"]["Outputs"]
    assert outputs["DatabaseEndpoint"]["Value"] == (
        "orders-db.cx1a2b3c4d5e.eu-west-1.rds.amazonaws.com")
    assert "MigrationFunctionName" in outputs


def test_an_existing_cluster_is_snapshotted_as_a_cluster(variants: dict[str, Synth]) -> None:
    synth = variants["existing-cluster"]
    properties = synth.templates["application"]["Resources"]["DatabaseMigration"]["Properties"]
    assert properties["DbClusterIdentifier"] == "orders-cluster"
    granted = by_action(statements_of_role(synth, "MigrationRole"))
    cluster, snapshots = f"{ARN}:cluster:orders-cluster", f"{ARN}:cluster-snapshot:premigrate-*"
    assert sorted(granted["rds:CreateDBClusterSnapshot"]) == sorted([cluster, snapshots])
    assert granted["rds:DescribeDBClusters"] == [cluster]
    assert "rds:CreateDBSnapshot" not in granted


def test_cdk_synth_of_the_existing_stage_works_offline(aws_free_env: dict[str, str]) -> None:
    # GIVEN no credentials and no way to reach AWS (the CLI would fail on a missing lookup)
    assert CDK.exists(), "run `npm ci` first (make test does)"
    # (the shared outdir: its cached bundles spare this synth the pip installs)
    outdir = SHARED_OUTDIR
    result = subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "--no-notices", "--quiet",
         "-c", "stage=existing", "-o", str(outdir)],
        cwd=REPO_ROOT, env=aws_free_env, capture_output=True, text=True, timeout=300,
        check=False)
    # THEN it synthesizes the application stack alone
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((outdir / "manifest.json").read_text())
    stacks = {name for name, artifact in manifest["artifacts"].items()
              if artifact["type"] == "aws:cloudformation:stack"}
    assert stacks == {"DbMigrations-existing-Application"}
    assert not manifest.get("missing")
