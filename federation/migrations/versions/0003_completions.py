"""The market time of the latest completion per action type, so the ``completed/<type>`` hints
survive a restart and a change of leader (federation/engine.py).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_completions",
        sa.Column("action_type", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("market_time", sa.BigInteger, nullable=False),
        # A database made from the store's tables before migrations may hold it already.
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("federation_completions")
