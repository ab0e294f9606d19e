"""notes: the table as the webapp first created it

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Databases that the webapp's old create-tables-at-start code made already have this table and its
indexes; ``if_not_exists`` lets this revision adopt them instead of failing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_notes_owner", "notes", ["owner"], if_not_exists=True)
    op.create_index("ix_notes_created_at", "notes", ["created_at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_notes_created_at", table_name="notes")
    op.drop_index("ix_notes_owner", table_name="notes")
    op.drop_table("notes")
