"""An import mark on conversations; message ids and the inactive versions of messages.

`conversations.imported_at` (Unix seconds, NULL: chatted here), `conversations.branches`
(JSON text of the inactive versions, NULL: none) and `messages.node_id`. Existing messages
get the id the reader gives a message without one (its position + 1, as 12 hex digits), so
a database migrated under a running older replica reads the same ids either way.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FILL_IDS = {
    "sqlite": "UPDATE messages SET node_id = printf('%012x', position + 1) WHERE node_id IS NULL",
    "postgresql": (
        "UPDATE messages SET node_id = lpad(to_hex(position + 1), 12, '0') WHERE node_id IS NULL"
    ),
}


def upgrade() -> None:
    """Add the columns (all nullable: no table is rebuilt) and give every message its id."""
    # Plain ALTER TABLE ... ADD COLUMN on both engines: SQLite's batch mode would rebuild
    # `messages` and lose the full-text triggers on it.
    op.add_column("conversations", sa.Column("imported_at", sa.Double(), nullable=True))
    op.add_column("conversations", sa.Column("branches", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("node_id", sa.String(64), nullable=True))
    op.execute(_FILL_IDS[op.get_bind().dialect.name])


def downgrade() -> None:
    """Drop the columns again (inactive versions and import marks are lost)."""
    # Native DROP COLUMN (SQLite 3.35+), for the same reason as above.
    op.drop_column("messages", "node_id")
    op.drop_column("conversations", "branches")
    op.drop_column("conversations", "imported_at")
