"""The paper fleet's deployments and changes
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
        "fleet_deployments",
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("deployment_time", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint"),
        if_not_exists=True,
    )
    op.create_table(
        "fleet_changes",
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("action_key", sa.Text(), nullable=False),
        sa.Column("action_id", sa.Text(), nullable=False),
        sa.Column("plan_sequence", sa.BigInteger(), nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("allocations", sa.JSON(), nullable=False),
        sa.Column("mission", sa.JSON(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("record_time", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fingerprint"],
            ["fleet_deployments.fingerprint"],
        ),
        sa.PrimaryKeyConstraint("fingerprint", "sequence"),
        sa.UniqueConstraint("action_key"),
        if_not_exists=True,
    )
    op.create_table(
        "fleet_change_book",
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entries", sa.JSON(), nullable=False),
        sa.Column("halted", sa.JSON(), nullable=False),
        sa.Column("scale", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fingerprint", "sequence"],
            ["fleet_changes.fingerprint", "fleet_changes.sequence"],
        ),
        sa.PrimaryKeyConstraint("fingerprint", "sequence"),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("fleet_change_book")
    op.drop_table("fleet_changes")
    op.drop_table("fleet_deployments")
