"""The meta optimizer's ledger and cycles
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
        "metaopt_carriers",
        sa.Column("plan_sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("action_id", sa.Text(), nullable=False),
        sa.Column("plan_id", sa.Text(), nullable=False),
        sa.Column("intent_key", sa.Text(), nullable=False),
        sa.Column("market_time", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("plan_sequence", "action_id"),
        if_not_exists=True,
    )
    op.create_index(
        "metaopt_carriers_by_intent",
        "metaopt_carriers",
        ["intent_key"],
        unique=False,
        if_not_exists=True,
    )
    op.create_table(
        "metaopt_cycles",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("cycle_id", sa.Text(), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=False),
        sa.Column("duration_seconds", sa.Double(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("start_date", sa.Text(), nullable=False),
        sa.Column("end_date", sa.Text(), nullable=False),
        sa.Column("dominant_sector", sa.Text(), nullable=False),
        sa.Column("reports_audited", sa.Integer(), nullable=False),
        sa.Column("reports_rejected", sa.Integer(), nullable=False),
        sa.Column("audit", sa.Text(), nullable=False),
        sa.Column("head_index", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
        sa.UniqueConstraint("cycle_id"),
        if_not_exists=True,
    )
    op.create_table(
        "metaopt_events",
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("ref", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
        if_not_exists=True,
    )
    op.create_table(
        "metaopt_follower",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("after_sequence", sa.BigInteger(), nullable=False),
        sa.Column("market_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        if_not_exists=True,
    )
    op.create_table(
        "metaopt_ledger",
        sa.Column("ledger_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("proposal_id", sa.Text(), nullable=False),
        sa.Column("cycle_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target_sector", sa.Text(), nullable=False),
        sa.Column("counter_sector", sa.Text(), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("p_value", sa.Double(), nullable=False),
        sa.Column("factor", sa.Double(), nullable=False),
        sa.Column("allocation", sa.Double(), nullable=False),
        sa.Column("report_ids", sa.Text(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("previous_hash", sa.Text(), nullable=False),
        sa.Column("entry_hash", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("ledger_index"),
        sa.UniqueConstraint("proposal_id"),
        if_not_exists=True,
    )
    op.create_index(
        "metaopt_ledger_by_cycle", "metaopt_ledger", ["cycle_id"], unique=False, if_not_exists=True
    )
    op.create_index(
        "metaopt_ledger_by_time",
        "metaopt_ledger",
        ["create_time"],
        unique=False,
        if_not_exists=True,
    )
    op.create_table(
        "metaopt_transitions",
        sa.Column("proposal_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("plan_sequence", sa.BigInteger(), nullable=False),
        sa.Column("plan_id", sa.Text(), nullable=False),
        sa.Column("action_id", sa.Text(), nullable=False),
        sa.Column("event_sequence", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("transition_time", sa.BigInteger(), nullable=False),
        sa.Column("market_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("proposal_id"),
        if_not_exists=True,
    )
    op.create_index(
        "metaopt_transitions_by_state",
        "metaopt_transitions",
        ["state"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("metaopt_transitions_by_state", table_name="metaopt_transitions")
    op.drop_table("metaopt_transitions")
    op.drop_index("metaopt_ledger_by_time", table_name="metaopt_ledger")
    op.drop_index("metaopt_ledger_by_cycle", table_name="metaopt_ledger")
    op.drop_table("metaopt_ledger")
    op.drop_table("metaopt_follower")
    op.drop_table("metaopt_events")
    op.drop_table("metaopt_cycles")
    op.drop_index("metaopt_carriers_by_intent", table_name="metaopt_carriers")
    op.drop_table("metaopt_carriers")
