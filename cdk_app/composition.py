"""The whole app for one stage: the stacks, and cdk-nag's AWS Solutions checks on them.

`app.py` calls `compose` with the settings read from cdk.json; the tests call it too, so what
they check is what `cdk synth` produces. A stage that creates its database has a database
stack and an application stack; a stage naming an `existingDatabase` has only the
application stack: nothing deployed can create, change or delete that database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from cdk_app.bundling import application_bundle, bundle_code, bundle_fingerprint
from cdk_app.config import DEFAULT_MIGRATIONS_PATH, StageSettings
from cdk_app.stacks.application_stack import ApplicationStack
from cdk_app.stacks.database_stack import DatabaseStack

STACK_PREFIX = "DbMigrations"
RELEASE_ID_LENGTH = 16  # of the fingerprint's hex digits: plenty to tell releases apart


@dataclass(frozen=True)
class Composition:
    database: DatabaseStack | None  # None: the stage names an existing database
    application: ApplicationStack

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [stack for stack in (self.database, self.application) if stack is not None]


def stack_names(settings: StageSettings) -> tuple[str, str]:
    return (f"{STACK_PREFIX}-{settings.name}-Database",
            f"{STACK_PREFIX}-{settings.name}-Application")


def naming_convention(settings: StageSettings) -> dict[str, str] | None:
    """The stage's `namingConvention`; for the repository's own history (`alembic/`), the
    convention its models declare (`sample_app.models.NAMING_CONVENTION`)."""
    if settings.naming_convention is not None:
        return dict(settings.naming_convention)
    if settings.migrations_path == DEFAULT_MIGRATIONS_PATH:
        from sample_app.models import NAMING_CONVENTION  # noqa: PLC0415 - only for our history

        return dict(NAMING_CONVENTION)
    return None


def release_id(application_fingerprint: str) -> str:
    """What changes with each release of the application's code and nothing else: its
    bundle's fingerprint (the asset hash). The migration resource's `ReleaseId`: a release
    that brings no revision still reaches it (a deferred contract revision runs then), and a
    deploy of the same code shows no difference."""
    return application_fingerprint[:RELEASE_ID_LENGTH]


def compose(app: cdk.App, settings: StageSettings, *, project_root: Path) -> Composition:
    env = cdk.Environment(account=settings.account, region=settings.region)
    database_name, application_name = stack_names(settings)
    description = "Deploy-time database migrations ({}): {}"
    migrations = settings.migrations(project_root)
    data = None
    if settings.new_database is not None:
        data = DatabaseStack(
            app, database_name, settings=settings, env=env,
            termination_protection=settings.production,
            description=description.format(settings.name, "network and database (stateful)"))
    # Each function its own bundle: the application's leaves out what only migrations use.
    application_spec = application_bundle(auto_migrate=settings.auto_migrate)
    fingerprint = bundle_fingerprint(project_root, application_spec, migrations=migrations)
    application = ApplicationStack(
        app, application_name, settings=settings, data=data, env=env,
        application_code=bundle_code(project_root, application_spec, migrations=migrations,
                                     fingerprint=fingerprint),
        release_id=release_id(fingerprint),
        project_root=project_root, migrations=migrations,
        naming_convention=naming_convention(settings),
        description=description.format(
            settings.name, "migration Lambda, custom resource, application, alarms"))
    if data is not None:
        application.add_stack_dependency(data, "the migration needs an available database")
    composition = Composition(database=data, application=application)
    for stack in composition.stacks:
        cdk.Tags.of(stack).add("Stage", settings.name)
        cdk.Tags.of(stack).add("Project", STACK_PREFIX)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return composition


