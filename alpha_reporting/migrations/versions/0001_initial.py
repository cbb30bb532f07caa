"""The sealed reports
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
        "alpha_reports",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("report_id", sa.Text(), nullable=False),
        sa.Column("sector", sa.Text(), nullable=False),
        sa.Column("trading_date", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
        sa.UniqueConstraint("report_id"),
        sa.UniqueConstraint("sector", "trading_date", name="alpha_reports_one_per_day"),
        if_not_exists=True,
    )
    op.create_index(
        "alpha_reports_by_date",
        "alpha_reports",
        ["trading_date", "sector"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("alpha_reports_by_date", table_name="alpha_reports")
    op.drop_table("alpha_reports")
