"""The plan history as it was before migrations: the event log and the plans' current states.

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
        "federation_events",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("plan_sequence", sa.BigInteger, nullable=False),
        sa.Column("create_time", sa.BigInteger, nullable=False),
        sa.Column("max_priority", sa.SmallInteger, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        if_not_exists=True,
    )
    op.create_index(
        "federation_plans_by_time",
        "federation_events",
        ["kind", "create_time"],
        if_not_exists=True,
    )
    op.create_table(
        "federation_plan_states",
        sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("federation_plan_states")
    op.drop_index("federation_plans_by_time", table_name="federation_events")
    op.drop_table("federation_events")
