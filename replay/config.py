"""What a replay runs: how many market days, the cadence of plans and samples, and which market.

Cadences are market time. A step of the market is one bar, so a cadence becomes a number of
bars once the spacing of the market's bars is known (one minute on the synthetic market).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from pathlib import Path

from qtmesh.base.config import require


class Arm(enum.Enum):
    """What runs beside the market's paper fleet."""

    CLOSED = "closed"  # the whole mesh in the loop: plans executed, meta, SESA, audits
    STATIC = "static"  # the same fleet with no action executed: the market alone


@dataclasses.dataclass(frozen=True, kw_only=True)
class MarketSource:
    """The bars: the embedded synthetic market (seeded, optionally pure noise) or a user's file."""

    seed: int = 7
    noise: bool = False
    data_path: Path | None = None

    def describe(self) -> str:
        if self.data_path is not None:
            return str(self.data_path)
        return f"synthetic seed {self.seed}" + (
            " (noise: zero drift, no regimes)" if self.noise else ""
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    """One replay. Defaults: a plan every 4 market hours, the fleet sampled at each plan.

    Every step of the clock makes the market account the fleet anew from its deployment (see
    market/fleet/engine.py), so a finer sample costs time that grows with the days replayed."""

    days: float = 5.0
    plan_every_minutes: float = 240.0
    sample_every_minutes: float = 240.0
    # Days the meta optimizer audits at each day's end (as its automatic cycles do).
    audit_window_days: int = 5
    # Longest wait for one plan's actions to finish, or for a day's reports, in wall seconds.
    settle_timeout_seconds: float = 900.0

    def __post_init__(self) -> None:
        require(math.isfinite(self.days) and 0 < self.days <= 3650, "days", "must be in (0, 3650]")
        require(
            math.isfinite(self.sample_every_minutes) and self.sample_every_minutes > 0,
            "sample_every_minutes",
            "must be positive",
        )
        require(
            math.isfinite(self.plan_every_minutes)
            and self.plan_every_minutes >= self.sample_every_minutes,
            "plan_every_minutes",
            "must be at least sample_every_minutes",
        )
        require(1 <= self.audit_window_days <= 365, "audit_window_days", "must be in 1..365")
        require(self.settle_timeout_seconds > 0, "settle_timeout_seconds", "must be positive")
