"""Which revision of the migrations the database is at, against the one this code expects.

The head revision is read once from ``webapp/migrations``; the database's from Alembic's
``alembic_version`` table. ``GET /health`` reports the comparison, so a monitor sees "migrations
were not run" instead of a healthy app whose every notes request fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from webapp.dberrors import SCHEMA, classify_db_error

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

CURRENT = "current"  # at the head revision
BEHIND = "behind"  # at an older revision: run the migrations
MISSING = "missing"  # never migrated: no alembic_version table, or an empty one
AHEAD = "ahead"  # at a revision this code does not know: newer code has migrated it (a rolling deploy)


@dataclass(frozen=True)
class Revisions:
    head: str | None
    known: frozenset[str]


def load_revisions(directory: Path = MIGRATIONS) -> Revisions:
    script = ScriptDirectory(str(directory))
    return Revisions(script.get_current_head(), frozenset(rev.revision for rev in script.walk_revisions()))


def schema_status(revision: str | None, revisions: Revisions) -> str:
    """Pure: the state of a database at ``revision`` (None: not migrated) for this code."""
    if revision is None:
        return MISSING
    if revision == revisions.head:
        return CURRENT
    return BEHIND if revision in revisions.known else AHEAD


async def database_revision(conn: AsyncConnection) -> str | None:
    """The database's revision; None when it was never migrated. Run it last on ``conn``: on
    PostgreSQL the failed query leaves the transaction aborted (rolled back when ``conn`` closes)."""
    try:
        revision: str | None = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    except sa_exc.DBAPIError as exc:
        if classify_db_error(exc) != SCHEMA:  # the connection's failure: the caller reports it
            raise
        return None
    return revision
