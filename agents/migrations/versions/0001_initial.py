"""An officer's policy log as it was before migrations (created only where missing); the
table's name is the ``table`` parameter (agents/policy_log.py, ``migrations_of``).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        context.config.attributes["table"],
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("time_ns", sa.BigInteger(), nullable=False),
        sa.Column("market_time_ns", sa.BigInteger(), nullable=False),
        sa.Column("action_key", sa.String(length=256), nullable=True),
        sa.Column("action_id", sa.String(length=256), nullable=False),
        sa.Column("plan_sequence", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("action_key"),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table(context.config.attributes["table"])
