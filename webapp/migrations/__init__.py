"""The webapp's Alembic migrations (``alembic.ini`` at the repository root points here)."""
