"""Settings of the meta optimizer (QTMESH_META_OPTIMIZER_<NAME>); its keyring settings are the
alpha-reporting service's (QTMESH_ALPHA_REPORTING_KEYRING, QTMESH_ALPHA_REPORTING_RETIRED_KEY_IDS,
QTMESH_ALPHA_REPORTING_KEYRING_FILE)."""

from __future__ import annotations

import dataclasses
import math

from alpha_reporting.config import KeyringConfig
from meta_optimizer.audit import AuditSettings
from meta_optimizer.engine import DEFAULT_QUEUE_SIZE
from meta_optimizer.lifecycle import DEFAULT_TTL_DAYS
from qtmesh.base.config import require, setting
from qtmesh.base.reconnect import ReconnectConfig
from qtmesh.base.storage import DataDirConfig

ENV_PREFIX = "QTMESH_META_OPTIMIZER_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaOptimizerConfig(DataDirConfig, ReconnectConfig, KeyringConfig):
    database_file = "metaopt.db"

    min_days: int = setting(3, help="fewest reported days of a sector before it may get a proposal")
    reinforcement_significance: float = setting(
        0.05, help="one-sided t-test level below which positive daily alpha reinforces a sector"
    )
    mitigation_significance: float = setting(
        0.10, help="one-sided t-test level below which negative daily alpha cuts exposure"
    )
    arb_significance: float = setting(
        0.05, help="studentized range test level of the best-worst gap that spawns an arb-mission"
    )
    reinforcement_factor: float = setting(
        1.2, help="exposure factor of reinforcement (1.2: +20 percent)"
    )
    mitigation_factor: float = setting(
        0.5, help="exposure factor of risk mitigation (0.5: -50 percent)"
    )
    arb_allocation: float = setting(0.10, help="equity per leg of a proposed arb-mission")
    auto_window_days: int = setting(
        5,
        help="days each automatic cycle audits, run once a new trading day is reported; "
        "0: cycles only when RunOptimizationCycle asks",
    )
    auto_settle_seconds: float = setting(
        2.0, help="quiet time on the report stream after which a newly reported day is complete"
    )
    proposal_ttl_days: float = setting(
        DEFAULT_TTL_DAYS,
        help="market days after the data a proposal rests on within which it must be applied; "
        "then it expires (a newer cycle replaces it sooner)",
    )
    follow_plans: bool = setting(
        True,
        help="follow the federation's plan stream to record what became of each proposal "
        "(applied, rejected or expired)",
    )

    watch_queue_events: int = setting(
        DEFAULT_QUEUE_SIZE,
        help="live events a WatchLedger subscriber may fall behind before its stream ends "
        "(RESOURCE_EXHAUSTED, naming the sequence to resume after)",
    )

    def __post_init__(self) -> None:
        self.check_database()
        KeyringConfig.__post_init__(self)
        require(self.min_days >= 2, "min_days", "must be at least 2: a t-test needs two days")
        for name in ("reinforcement_significance", "mitigation_significance", "arb_significance"):
            value = getattr(self, name)
            require(math.isfinite(value) and 0 < value < 1, name, "must be in (0, 1)")
        require(
            math.isfinite(self.reinforcement_factor) and 1 < self.reinforcement_factor <= 5,
            "reinforcement_factor",
            "must be in (1, 5]",
        )
        require(
            math.isfinite(self.mitigation_factor) and 0 <= self.mitigation_factor < 1,
            "mitigation_factor",
            "must be in [0, 1)",
        )
        require(
            math.isfinite(self.arb_allocation) and 0 < self.arb_allocation <= 1,
            "arb_allocation",
            "must be in (0, 1]",
        )
        require(
            self.auto_window_days == 0 or self.auto_window_days >= self.min_days,
            "auto_window_days",
            f"must be 0 (off) or at least min_days ({self.min_days}): a shorter window never "
            "proposes",
        )
        require(
            math.isfinite(self.auto_settle_seconds) and self.auto_settle_seconds > 0,
            "auto_settle_seconds",
            "must be positive",
        )
        require(
            math.isfinite(self.proposal_ttl_days) and 0 < self.proposal_ttl_days <= 365,
            "proposal_ttl_days",
            "must be in (0, 365]",
        )
        require(
            1 <= self.watch_queue_events <= 1_000_000,
            "watch_queue_events",
            "must be in 1..1000000",
        )
        self.check_reconnect()

    @property
    def audit(self) -> AuditSettings:
        return AuditSettings(
            min_days=self.min_days,
            reinforcement_significance=self.reinforcement_significance,
            mitigation_significance=self.mitigation_significance,
            arb_significance=self.arb_significance,
            reinforcement_factor=self.reinforcement_factor,
            mitigation_factor=self.mitigation_factor,
            arb_allocation=self.arb_allocation,
        )
