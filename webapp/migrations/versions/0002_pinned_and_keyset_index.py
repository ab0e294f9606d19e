"""notes: a pinned flag, and one index for listing by owner, newest first

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

The list is paged by (created_at, id) within an owner (keyset pagination), so one composite index
(owner, created_at, id) replaces the two single-column ones: its prefix serves lookups by owner.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A server default fills the rows that exist; NOT NULL needs it on every backend.
    with op.batch_alter_table("notes") as batch:
        batch.add_column(sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_notes_owner_created_at_id", "notes", ["owner", "created_at", "id"])
    op.drop_index("ix_notes_owner", table_name="notes")
    op.drop_index("ix_notes_created_at", table_name="notes")


def downgrade() -> None:
    op.create_index("ix_notes_created_at", "notes", ["created_at"])
    op.create_index("ix_notes_owner", "notes", ["owner"])
    op.drop_index("ix_notes_owner_created_at_id", table_name="notes")
    with op.batch_alter_table("notes") as batch:
        batch.drop_column("pinned")
