"""Alembic's entry point for the webapp's schema: `python -m alembic upgrade head`.

The database is found exactly as the webapp finds it (:func:`webapp.config.load_database_url`:
``DATABASE_URL``, or under the supervisor the variable its ``[database] url_env`` names, or the
development SQLite file), and reached with the same async driver. On PostgreSQL the whole upgrade
runs in one transaction holding an advisory lock, so two replicas starting together migrate once:
the second waits, then finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from supervisor.config.dburl import POSTGRESQL, DatabaseURL, connect_args
from webapp.config import WebConfigError, load_database_url
from webapp.models import Base

MIGRATION_LOCK = 743201  # pg_advisory_xact_lock key: one migrator at a time per database
CONNECT_TIMEOUT = 10.0


def _database() -> DatabaseURL:
    try:
        database, _ = load_database_url(os.environ)
    except WebConfigError as exc:
        raise SystemExit(f"migrations: {exc}") from None
    return database


def _migrate(connection: Connection, postgresql: bool) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=not postgresql)  # SQLite alters tables by copying them
    with context.begin_transaction():
        if postgresql:
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        context.run_migrations()


async def run_online() -> None:
    database = _database()
    postgresql = database.backend == POSTGRESQL
    if postgresql:
        args = connect_args(database, CONNECT_TIMEOUT)
    else:
        args = {"timeout": CONNECT_TIMEOUT}
        if database.sqlite_path is not None:
            database.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(database.url, poolclass=NullPool, connect_args=args)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate, postgresql)
            await connection.commit()
    finally:
        await engine.dispose()


def run_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    database = _database()
    context.configure(url=database.url, target_metadata=Base.metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


if context.config.config_file_name is not None:  # alembic.ini's [loggers]: progress on stderr
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)
if context.is_offline_mode():
    run_offline()
else:
    asyncio.run(run_online())
