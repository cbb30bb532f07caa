"""The plans this federation executes, so a crashed one resumes them (federation/engine.py).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_executions",
        sa.Column("plan_sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        # A database this session's federation made before migrations may hold it already.
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("federation_executions")
