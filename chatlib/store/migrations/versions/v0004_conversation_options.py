"""What a conversation asks answers for: `conversations.options` (web search, reasoning, length).

JSON text of `AnswerOptions` (NULL: the defaults). Existing conversations keep NULL, so they
read as the defaults: no web search, no reasoning effort, the model's own answer length.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the column (nullable: a plain ALTER on both engines, no table rebuilt)."""
    op.add_column("conversations", sa.Column("options", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop the column again (every conversation's options go back to the defaults)."""
    op.drop_column("conversations", "options")
