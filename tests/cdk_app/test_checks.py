"""cdk-nag (AwsSolutions) with no unacknowledged finding, cfn-lint without errors, and no
secret in cdk.out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sns as sns

from cdk_app.composition import compose
from cdk_app.config import load_stage_settings
from tests.cdk_app.support import BUNDLING_STACKS, Synth, stage_context

CFN_LINT = Path(sys.executable).parent / "cfn-lint"
# A PostgreSQL URL with a password in it, or an assignment of a literal password.
# Documentation placeholders (USER:PASSWORD) are not credentials.
URL_WITH_PASSWORD = re.compile(
    r"postgres(?:ql)?(?:\+\w+)?://(?![A-Z_]+:[A-Z_]+@)[^:/@\s\"]+:[^@/\s\"]+@")
PASSWORD_LITERAL = re.compile(r"\"(?:MasterUserPassword|Password|SecretString)\"\s*:\s*\"")


def test_every_stage_and_variant_passes_cdk_nag(all_synths: dict[str, Synth]) -> None:
    # The synths ran AwsSolutionsChecks (compose adds them): an unacknowledged finding
    # fails synth. Every acknowledgement carries its reason into the template metadata.
    for name, synth in all_synths.items():
        for which, template in synth.templates.items():
            assert template["Resources"], (name, which)


def test_cdk_nag_really_runs_and_fails_synth_on_a_finding(tmp_path: Path) -> None:
    # GIVEN the dev app plus one non-compliant resource (an SNS topic without encryption)
    context = {**stage_context("dev"), BUNDLING_STACKS: []}
    app = cdk.App(outdir=str(tmp_path), context=context)
    composition = compose(app, load_stage_settings(context, "dev"),
                          project_root=Path(__file__).resolve().parents[2])
    sns.Topic(composition.application, "Unencrypted")
    # WHEN synthesized THEN cdk-nag refuses it, naming the rule
    with pytest.raises(RuntimeError, match="AwsSolutions-SNS3") as refused:
        app.synth()
    assert "Unencrypted" in str(refused.value)


def test_cfn_lint_finds_no_error_in_any_template(all_synths: dict[str, Synth]) -> None:
    templates = [str(synth.outdir / stack.template_file) for synth in all_synths.values()
                 for stack in synth.composition.stacks]
    result = subprocess.run([str(CFN_LINT), "--format", "json", *templates],
                            capture_output=True, text=True, timeout=300, check=False)
    findings = json.loads(result.stdout or "[]")
    errors = [f"{f['Rule']['Id']} {f['Filename']}: {f['Message']}" for f in findings
              if f["Level"] == "Error"]
    assert errors == []
    assert result.returncode in (0, 4), result.stderr  # 4: warnings only


def test_no_plaintext_secret_in_cdk_out(dev: Synth, prod: Synth) -> None:
    for synth in (dev, prod):
        bundle = synth.bundle_dir()
        for path in synth.outdir.rglob("*"):
            # bundles hold third-party code whose docs show example URLs; ours is below
            if not path.is_file() or any(p.name.startswith("asset.") for p in path.parents):
                continue
            text = path.read_text(errors="replace")
            assert not URL_WITH_PASSWORD.search(text), path
            assert not PASSWORD_LITERAL.search(text), path
        # Our own code in the bundle carries no credentials either.
        for folder in ("migration_resource", "sample_app", "migrations"):
            for path in (bundle / folder).rglob("*"):
                if path.is_file():
                    assert not URL_WITH_PASSWORD.search(path.read_text(errors="replace")), path
        assert not list(bundle.glob("**/.env")) and not list(bundle.glob("**/*.pem"))
