"""Meta's parameter versions, windows, cursors and trial log
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
        "meta_evaluations",
        sa.Column("strategy_id", sa.Text(), nullable=False),
        sa.Column("evaluated_time", sa.BigInteger(), nullable=False),
        sa.Column("family", sa.Text(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("composite_score", sa.Double(), nullable=False),
        sa.Column("sharpe_ratio", sa.Double(), nullable=False),
        sa.Column("deflated_sharpe_ratio", sa.Double(), nullable=True),
        sa.Column("trade_count", sa.BigInteger(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("strategy_id", "evaluated_time"),
        if_not_exists=True,
    )
    op.create_index(
        "meta_evaluations_by_stage",
        "meta_evaluations",
        ["stage", "strategy_id"],
        unique=False,
        if_not_exists=True,
    )
    op.create_table(
        "meta_parameter_versions",
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("action_key", sa.Text(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("tracked", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
        sa.UniqueConstraint("action_key"),
        if_not_exists=True,
    )
    op.create_table(
        "meta_sequence_cursors",
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("resume_after", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stream"),
        if_not_exists=True,
    )
    op.create_table(
        "meta_sesa_trials",
        sa.Column("trial_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("rate", sa.Double(), nullable=False),
        sa.Column("magnitude", sa.Double(), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("trial_index"),
        if_not_exists=True,
    )
    op.create_table(
        "meta_stream_cursors",
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("exit_time", sa.BigInteger(), nullable=False),
        sa.Column("strategy_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("stream"),
        if_not_exists=True,
    )
    op.create_table(
        "meta_trade_families",
        sa.Column("strategy_id", sa.Text(), nullable=False),
        sa.Column("family", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("strategy_id"),
        if_not_exists=True,
    )
    op.create_table(
        "meta_trades",
        sa.Column("strategy_id", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("entry_time", sa.BigInteger(), nullable=False),
        sa.Column("exit_time", sa.BigInteger(), nullable=False),
        sa.Column("sector", sa.Text(), nullable=False),
        sa.Column("return_fraction", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("strategy_id", "symbol", "entry_time", "exit_time"),
        if_not_exists=True,
    )
    op.create_index(
        "meta_trades_by_exit", "meta_trades", ["exit_time"], unique=False, if_not_exists=True
    )
    op.create_table(
        "meta_sesa_credits",
        sa.Column("strategy_id", sa.Text(), nullable=False),
        sa.Column("trial_index", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("evaluated_time", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_index"],
            ["meta_sesa_trials.trial_index"],
        ),
        sa.PrimaryKeyConstraint("strategy_id"),
        if_not_exists=True,
    )
    op.create_index(
        "meta_sesa_credits_by_time",
        "meta_sesa_credits",
        ["evaluated_time"],
        unique=False,
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("meta_sesa_credits_by_time", table_name="meta_sesa_credits")
    op.drop_table("meta_sesa_credits")
    op.drop_index("meta_trades_by_exit", table_name="meta_trades")
    op.drop_table("meta_trades")
    op.drop_table("meta_trade_families")
    op.drop_table("meta_stream_cursors")
    op.drop_table("meta_sesa_trials")
    op.drop_table("meta_sequence_cursors")
    op.drop_table("meta_parameter_versions")
    op.drop_index("meta_evaluations_by_stage", table_name="meta_evaluations")
    op.drop_table("meta_evaluations")
