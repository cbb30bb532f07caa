"""Settings of the federation (environment variables QTMESH_FEDERATION_<NAME>)."""

from __future__ import annotations

import dataclasses

from qtmesh.base.config import require, setting
from qtmesh.base.contract import ActionType
from qtmesh.base.storage import DataDirConfig

ENV_PREFIX = "QTMESH_FEDERATION_"

# Which service executes each action type (ExecuteAction is sent there).
DEFAULT_OWNERS = {
    "HALT_TRADING": "risk",
    "ADJUST_RISK_LIMITS": "risk",
    "ADJUST_EXPOSURE": "market",
    "SPAWN_ARB_MISSION": "market",
    "SWITCH_MODE": "ceo",
    "ENABLE_STRATEGY": "strategy",
    "DISABLE_STRATEGY": "strategy",
    "REWEIGHT_STRATEGIES": "strategy",
    "PROMOTE_STRATEGY": "strategy",
    "RUN_EVOLUTION": "sesa",
    "TUNE_LEARNING": "meta",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FederationConfig(DataDirConfig):
    """The spec's FederationConfig with its defaults, plus what a service needs to run."""

    database_file = "federation.db"

    gap_update_interval_seconds: float = setting(
        30.0, help="interval of automatic planning cycles (0: only GeneratePlan plans)"
    )
    agent_timeout_seconds: float = setting(10.0, help="cap on one agent's Recommend call")
    cycle_deadline_seconds: float = setting(
        12.0, help="budget of a whole fan-out; an agent gets min(its cap, time left)"
    )
    deadline_reserve_seconds: float = setting(
        0.02, help="kept back from the budget for building and storing the plan"
    )
    agent_attempts: int = setting(
        2, help="attempts of a Recommend that failed UNAVAILABLE, within the budget"
    )
    max_concurrent_actions: int = setting(
        5, help="actions executing at once, across every plan being executed"
    )
    action_timeout_seconds: float = setting(10.0, help="cap on one ExecuteAction call")
    action_attempts: int = setting(3, help="attempts of an ExecuteAction that can be retried")
    retry_backoff_seconds: float = setting(0.05, help="first backoff between attempts (doubles)")
    min_consensus_for_critical: float = setting(
        0.80, help="agreement a critical action needs to execute, 0..1"
    )
    enable_sesa_integration: bool = setting(True, help="ask SESA for recommendations")
    enable_meta_learning_integration: bool = setting(True, help="ask meta for recommendations")
    agents: tuple[str, ...] = setting(
        ("ceo", "risk", "strategy", "memory", "world-model", "sesa", "meta", "meta-optimizer"),
        help="services asked in every cycle (addresses from QTMESH_ADDRESSES)",
    )
    owners: dict[str, str] = setting(
        DEFAULT_OWNERS, help="ACTION_TYPE=service pairs: who executes each action type"
    )
    execute_plans: bool = setting(True, help="execute the actions of automatic cycles")
    shutdown_grace_seconds: float = setting(
        5.0,
        help="on shutdown, time executions get to finish; actions still unfinished then are "
        "recorded as failed",
    )
    subscriber_queue: int = setting(
        1024,
        help="events buffered per subscriber; a subscriber that falls further behind is "
        "told to resume",
    )
    history_page: int = setting(500, help="events read from history per page when resuming")

    def __post_init__(self) -> None:
        self.check_database()
        for name in (
            "gap_update_interval_seconds",
            "deadline_reserve_seconds",
            "retry_backoff_seconds",
            "shutdown_grace_seconds",
        ):
            require(getattr(self, name) >= 0, name, "must not be negative")
        for name in ("agent_timeout_seconds", "cycle_deadline_seconds", "action_timeout_seconds"):
            require(getattr(self, name) > 0, name, "must be positive")
        require(
            self.deadline_reserve_seconds < self.cycle_deadline_seconds,
            "deadline_reserve_seconds",
            "must be below cycle_deadline_seconds",
        )
        for name in ("agent_attempts", "max_concurrent_actions", "action_attempts"):
            require(1 <= getattr(self, name) <= 100, name, "must be in 1..100")
        require(
            0 <= self.min_consensus_for_critical <= 1,
            "min_consensus_for_critical",
            "must be in 0..1",
        )
        require(self.subscriber_queue >= 1, "subscriber_queue", "must be at least 1")
        require(self.history_page >= 1, "history_page", "must be at least 1")
        for name in self.owners:
            require(name in ActionType.__members__, "owners", f"unknown action type {name!r}")

    @property
    def asked_agents(self) -> tuple[str, ...]:
        skipped = set()
        if not self.enable_sesa_integration:
            skipped.add("sesa")
        if not self.enable_meta_learning_integration:
            skipped.add("meta")
        return tuple(a for a in self.agents if a not in skipped)

    @property
    def owner_by_type(self) -> dict[ActionType, str]:
        return {ActionType[name]: service for name, service in self.owners.items()}
