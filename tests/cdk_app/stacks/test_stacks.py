"""The two stacks: stateful apart from stateless, outputs, dependencies."""

from __future__ import annotations

import re
from pathlib import Path

from cdk_app.bundling import application_bundle, bundle_fingerprint
from cdk_app.composition import RELEASE_ID_LENGTH, release_id
from tests.alembic.support import REPO_ROOT
from tests.cdk_app.support import Synth, project_copy


def remote_admin_stack_output() -> str:
    source = (REPO_ROOT / "scripts" / "remote_admin.py").read_text()
    found = re.search(r'^STACK_OUTPUT = "(\w+)"', source, re.MULTILINE)
    assert found is not None
    return found.group(1)


STATEFUL = {"AWS::RDS::DBInstance", "AWS::RDS::DBCluster", "AWS::SecretsManager::Secret",
            "AWS::EC2::VPC"}


def test_stateful_resources_live_only_in_the_database_stack(all_synths: dict[str, Synth]) -> None:
    for synth in all_synths.values():
        types = {r["Type"] for r in synth.templates["application"]["Resources"].values()}
        assert not types & STATEFUL
        if synth.composition.database is None:  # an existing database: no database stack
            continue
        database_types = {r["Type"] for r in synth.templates["database"]["Resources"].values()}
        assert not {"AWS::Lambda::Function", "Custom::DatabaseMigration",
                    "AWS::CloudWatch::Alarm"} & database_types


def test_outputs(dev: Synth) -> None:
    application = dev.templates["application"]["Outputs"]
    # remote_admin.py --stack-name reads exactly this key
    assert remote_admin_stack_output() == "MigrationFunctionName"
    assert application["MigrationFunctionName"]["Value"]["Ref"].startswith("MigrationFunction")
    assert "DashboardUrl" in application and "AlarmTopicArn" in application
    database = dev.templates["database"]["Outputs"]
    assert database["DatabaseEndpoint"]["Value"] == {
        "Fn::GetAtt": [next(iter(dev.resources("database", "AWS::RDS::DBInstance"))),
                       "Endpoint.Address"]}
    assert "Ref" in database["DatabaseSecretArn"]["Value"]


def test_both_stages_synthesize_with_their_names_and_environment(
    dev: Synth, prod: Synth,
) -> None:
    for synth, stage in ((dev, "dev"), (prod, "prod")):
        for stack in (synth.composition.database, synth.composition.application):
            assert stack.stack_name.startswith(f"DbMigrations-{stage}-")
            assert (stack.account, stack.region) == ("123456789012", "eu-west-1")
    assert prod.composition.database.termination_protection
    assert not dev.composition.database.termination_protection


def test_availability_zones_come_from_the_committed_context(dev: Synth) -> None:
    zones = {subnet["Properties"]["AvailabilityZone"]
             for subnet in dev.resources("database", "AWS::EC2::Subnet").values()}
    assert zones == {"eu-west-1a", "eu-west-1b"}


def test_each_release_of_the_application_code_reaches_the_migration(
    dev: Synth, prod: Synth, tmp_path: Path,
) -> None:
    # GIVEN the stages as synthesized: the migration's ReleaseId is the application bundle's
    for synth in (dev, prod):
        spec = application_bundle(auto_migrate=synth.settings.auto_migrate)
        custom = synth.one("application", "Custom::DatabaseMigration")["Properties"]
        assert custom["ReleaseId"] == release_id(
            bundle_fingerprint(REPO_ROOT, spec, migrations=REPO_ROOT / "alembic"))
        assert len(custom["ReleaseId"]) == RELEASE_ID_LENGTH
    # WHEN only the application's code changes (no revision), THEN the ReleaseId changes;
    # the same code gives the same one, so a deploy that changes nothing shows no difference
    project = project_copy(tmp_path)
    spec = application_bundle(auto_migrate=False)
    same = release_id(bundle_fingerprint(project, spec, migrations=project / "alembic"))
    assert same == release_id(
        bundle_fingerprint(REPO_ROOT, spec, migrations=REPO_ROOT / "alembic"))
    (project / "sample_app" / "release.py").write_text('RELEASE = "2026.12.1"\n')
    assert release_id(
        bundle_fingerprint(project, spec, migrations=project / "alembic")) != same
