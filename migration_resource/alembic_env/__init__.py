"""The migration engine's own Alembic environment: `env.py` and `script.py.mako` in this folder.

Alembic loads `env.py` by path (it is the `script_location` of every Config the engine builds,
see `migration_resource.revisions.alembic_config`); this file only makes the folder a package,
so that type checkers name the module `migration_resource.alembic_env.env`.
"""
