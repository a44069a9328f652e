"""The whole app for one stage: the stacks, and cdk-nag's AWS Solutions checks on them.

`app.py` calls `compose` with the settings read from cdk.json; the tests call it too, so what
they check is what `cdk synth` produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from cdk_app.bundling import MIGRATION_BUNDLE, application_bundle, bundle_code
from cdk_app.config import StageSettings
from cdk_app.stacks.application_stack import ApplicationStack
from cdk_app.stacks.database_stack import DatabaseStack

STACK_PREFIX = "DbMigrations"


@dataclass(frozen=True)
class Composition:
    database: DatabaseStack
    application: ApplicationStack


def stack_names(settings: StageSettings) -> tuple[str, str]:
    return (f"{STACK_PREFIX}-{settings.name}-Database",
            f"{STACK_PREFIX}-{settings.name}-Application")


def compose(app: cdk.App, settings: StageSettings, *, project_root: Path) -> Composition:
    env = cdk.Environment(account=settings.account, region=settings.region)
    database_name, application_name = stack_names(settings)
    description = "Deploy-time database migrations ({}): {}"
    data = DatabaseStack(
        app, database_name, settings=settings, env=env,
        termination_protection=settings.production,
        description=description.format(settings.name, "network and database (stateful)"))
    application = ApplicationStack(
        app, application_name, settings=settings, data=data, env=env,
        # Each function its own bundle: the application's leaves out what only migrations use.
        migration_code=bundle_code(project_root, MIGRATION_BUNDLE),
        application_code=bundle_code(
            project_root, application_bundle(auto_migrate=settings.auto_migrate)),
        project_root=project_root,
        description=description.format(
            settings.name, "migration Lambda, custom resource, application, alarms"))
    application.add_stack_dependency(data, "the migration needs an available database")
    for stack in (data, application):
        cdk.Tags.of(stack).add("Stage", settings.name)
        cdk.Tags.of(stack).add("Project", STACK_PREFIX)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return Composition(database=data, application=application)
