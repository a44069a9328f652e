"""Team-style Alembic histories (one folder of revision files each) and their helpers."""
