"""The sample application: a small task tracker whose schema the Alembic migrations build."""
