"""The memory engine's episodes and tallies
as they were before migrations (created only where missing).

Revision ID: 0001
Revises:
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
        "memory_episodes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("time_ns", sa.BigInteger(), nullable=False),
        sa.Column("decision", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.Double(), nullable=False),
        sa.Column("regime", sa.String(length=64), nullable=False),
        sa.Column("sector", sa.String(length=64), nullable=False),
        sa.Column("features", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sqlite_autoincrement=True,
        if_not_exists=True,
    )
    op.create_table(
        "memory_outcome_tallies",
        sa.Column("regime", sa.String(length=64), nullable=False),
        sa.Column("sector", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=200), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Double(), nullable=False),
        sa.Column("total_squares", sa.Double(), nullable=False),
        sa.Column("positives", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("regime", "sector", "decision"),
        if_not_exists=True,
    )
    op.create_table(
        "memory_state",
        sa.Column("singleton", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("episodes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("singleton"),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("memory_state")
    op.drop_table("memory_outcome_tallies")
    op.drop_table("memory_episodes")
