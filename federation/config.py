"""Settings of the federation (environment variables QTMESH_FEDERATION_<NAME>)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

from qtmesh.base.config import ConfigError, require, setting
from qtmesh.base.contract import ActionType, Priority
from qtmesh.base.storage import DataDirConfig

ENV_PREFIX = "QTMESH_FEDERATION_"

# Which service executes each action type (ExecuteAction is sent there).
# The market's fleet executes everything that changes what it trades: one owner of the book.
DEFAULT_OWNERS = {
    "HALT_TRADING": "market",
    "RESUME_TRADING": "market",
    "ADJUST_RISK_LIMITS": "risk",
    "ADJUST_EXPOSURE": "market",
    "SPAWN_ARB_MISSION": "market",
    "SWITCH_MODE": "ceo",
    "ENABLE_STRATEGY": "market",
    "DISABLE_STRATEGY": "market",
    "REWEIGHT_STRATEGIES": "market",
    "PROMOTE_STRATEGY": "market",
    "RUN_EVOLUTION": "sesa",
    "TUNE_LEARNING": "meta",
}

# How long after the plan's as_of_time (market time) an action of each priority may start; a
# priority not listed has no window (critical actions run first instead, low ones when
# convenient).
DEFAULT_PRIORITY_WINDOWS = {"HIGH": "60", "MEDIUM": "300"}

# Per-attempt ExecuteAction timeouts that differ from action_timeout_seconds: an evolution
# completes only once it has run.
DEFAULT_ACTION_TIMEOUTS = {"RUN_EVOLUTION": "600"}


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
    action_timeout_seconds: float = setting(
        10.0, help="cap on one ExecuteAction attempt of a type not in action_timeouts"
    )
    action_timeouts: dict[str, str] = setting(
        DEFAULT_ACTION_TIMEOUTS,
        help="ACTION_TYPE=seconds pairs: cap on one ExecuteAction attempt of that type",
    )
    action_attempts: int = setting(3, help="attempts of an ExecuteAction that can be retried")
    owner_answer_timeout_seconds: float = setting(
        300.0,
        help="how long an action whose fate is unknown (every attempt timed out or lost its "
        "connection, or a crash left it executing) waits for its owner to say whether it "
        "applied it, before it is recorded as failed",
    )
    retry_backoff_seconds: float = setting(0.05, help="first backoff between attempts (doubles)")
    min_consensus_for_critical: float = setting(
        0.80, help="agreement a critical action needs to execute, 0..1"
    )
    priority_windows: dict[str, str] = setting(
        DEFAULT_PRIORITY_WINDOWS,
        help="PRIORITY=seconds pairs: market time after the plan's as_of_time by which an "
        "action must start, else it expires; unlisted priorities have no window",
    )
    max_recommendation_age_seconds: float = setting(
        86_400.0,
        help="market time a recommendation's data may be older than the cycle's as_of_time; "
        "an older one is superseded",
    )
    max_plan_actions: int = setting(
        20, help="actions a plan takes at most; the lowest ranked of the rest are superseded"
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
    record_to_memory: bool = setting(
        True,
        help="store each executed exposure change, halt and mode switch with the fleet's return "
        "over the following window in the memory engine (see federation/memory.py)",
    )
    memory_outcome_window_hours: float = setting(
        4.0,
        help="market hours after an action took effect over which its outcome (the sector's or "
        "the fleet's return) is measured before it is stored in memory",
    )

    leader_election: bool = setting(
        True,
        help="with a PostgreSQL database_url, the replicas sharing it elect one leader that "
        "plans and executes while the others serve the plan stream and history "
        "(federation/lease.py); off, or on SQLite, this replica leads alone",
    )
    lease_heartbeat_seconds: float = setting(
        1.0,
        help="how often the leader checks the session holding its lease; a failed check stops "
        "the replica",
    )

    @property
    def elects_leader(self) -> bool:
        return self.leader_election and self.url.startswith("postgresql")

    def __post_init__(self) -> None:
        self.check_database()
        require(self.lease_heartbeat_seconds > 0, "lease_heartbeat_seconds", "must be positive")
        for name in (
            "gap_update_interval_seconds",
            "deadline_reserve_seconds",
            "retry_backoff_seconds",
            "shutdown_grace_seconds",
        ):
            require(getattr(self, name) >= 0, name, "must not be negative")
        for name in (
            "agent_timeout_seconds",
            "cycle_deadline_seconds",
            "action_timeout_seconds",
            "owner_answer_timeout_seconds",
            "max_recommendation_age_seconds",
        ):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0, name, "must be a positive number")
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
        window = self.memory_outcome_window_hours
        require(
            math.isfinite(window) and 0 < window <= 24 * 365,
            "memory_outcome_window_hours",
            "must be in (0, 8760]",
        )
        require(1 <= self.max_plan_actions <= 1000, "max_plan_actions", "must be in 1..1000")
        for name in self.owners:
            require(name in ActionType.__members__, "owners", f"unknown action type {name!r}")
        # Parsed once here, so a bad pair stops start-up with its name.
        _seconds_by_name(self.action_timeouts, ActionType.__members__, "action_timeouts")
        _seconds_by_name(self.priority_windows, Priority.__members__, "priority_windows")

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

    @property
    def timeout_by_type(self) -> dict[ActionType, float]:
        """The per-attempt ExecuteAction timeout of every action type, in seconds."""
        special = _seconds_by_name(self.action_timeouts, ActionType.__members__, "action_timeouts")
        return {kind: special.get(kind.name, self.action_timeout_seconds) for kind in ActionType}

    @property
    def window_by_priority(self) -> dict[Priority, int]:
        """Each windowed priority's window, in nanoseconds of market time."""
        windows = _seconds_by_name(self.priority_windows, Priority.__members__, "priority_windows")
        return {Priority[name]: round(seconds * 1e9) for name, seconds in windows.items()}

    @property
    def memory_outcome_window(self) -> int:
        """``memory_outcome_window_hours`` in nanoseconds."""
        return round(self.memory_outcome_window_hours * 3.6e12)

    @property
    def max_recommendation_age(self) -> int:
        """``max_recommendation_age_seconds`` in nanoseconds."""
        return round(self.max_recommendation_age_seconds * 1e9)


def _seconds_by_name(
    pairs: Mapping[str, str], names: Mapping[str, object], setting: str
) -> dict[str, float]:
    """NAME=seconds pairs as floats, each name one of ``names`` and each value positive."""
    values = {}
    for name, text in pairs.items():
        if name not in names:
            raise ConfigError(setting, f"unknown name {name!r}; known: {', '.join(names)}")
        try:
            seconds = float(text)
        except (TypeError, ValueError):
            raise ConfigError(setting, f"{name}={text!r} is not a number of seconds") from None
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(setting, f"{name}={text} must be a positive number of seconds")
        values[name] = seconds
    return values
