"""The tables. One resource for now: notes, each owned by the user in the bearer token's ``sub``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, Text
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

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(OWNER_MAX), index=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    def to_json(self) -> dict[str, Any]:
        created = self.created_at
        if created.tzinfo is None:  # SQLite keeps no zone; everything is stored as UTC
            created = created.replace(tzinfo=UTC)
        return {"id": self.id, "title": self.title, "body": self.body, "owner": self.owner,
                "created_at": created.isoformat().replace("+00:00", "Z")}
