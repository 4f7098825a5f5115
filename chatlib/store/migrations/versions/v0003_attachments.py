"""Attached files: `messages.attachments` (JSON text of the references) and `attachments`.

`attachments` holds each owner's files once per content, keyed by (owner_key, sha256), the
bytes in a BLOB (SQLite) or BYTEA (PostgreSQL). Existing messages have no attachments.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the column (nullable: plain ALTER, no rebuild) and create the table."""
    # Plain ALTER TABLE ... ADD COLUMN on both engines: SQLite's batch mode would rebuild
    # `messages` and lose the full-text triggers on it (as in 0002).
    op.add_column("messages", sa.Column("attachments", sa.Text(), nullable=True))
    op.create_table(
        "attachments",
        sa.Column("owner_key", sa.String(32), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("mime", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    """Drop the table and the column (attached files and references are lost)."""
    op.drop_table("attachments")
    op.drop_column("messages", "attachments")
