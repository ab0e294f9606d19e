"""The tables. One resource for now: notes, each owned by the user in the bearer token's ``sub``.

The schema itself is made by the Alembic migrations in ``webapp/migrations``; these classes must
describe the head revision (``tests/test_migrations.py`` compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Index, Integer, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TITLE_MAX = 200
BODY_MAX = 10_000
OWNER_MAX = 255


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    # Listing is "this owner's notes, newest first", paged by (created_at, id): one index serves it.
    __table_args__ = (Index("ix_notes_owner_created_at_id", "owner", "created_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(OWNER_MAX))
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    @property
    def created_utc(self) -> datetime:
        created = self.created_at
        if created.tzinfo is None:  # SQLite keeps no zone; everything is stored as UTC
            created = created.replace(tzinfo=UTC)
        return created

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "body": self.body, "owner": self.owner,
                "pinned": self.pinned, "created_at": self.created_utc.isoformat().replace("+00:00", "Z")}
