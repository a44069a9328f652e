"""The Lambda runtime the bundle is built for, as pip options (no CDK import: the local
deploy installs the runtime's boto3 with them without starting jsii)."""

from __future__ import annotations

PYTHON_VERSION = "3.12"
PLATFORM = "manylinux2014_x86_64"
PIP_OPTIONS = (
    "--platform", PLATFORM, "--only-binary=:all:", "--python-version", PYTHON_VERSION,
    "--implementation", "cp", "--no-compile",
)
