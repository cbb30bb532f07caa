"""Settings of the market service (environment variables QTMESH_MARKET_<NAME>)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from qtmesh.config import require, setting

ENV_PREFIX = "QTMESH_MARKET_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MarketConfig:
    data_path: Path | None = setting(
        None,
        help="CSV or Parquet file of bars (format in market/sources.py); unset: synthetic market",
    )
    seed: int = setting(7, help="seed of the synthetic market")
    synthetic_days: int = setting(60, help="days of one-minute bars in the synthetic market")
    replay_start: float = setting(
        0.5, help="share of the timeline already revealed at start-up, in (0, 1]"
    )

    def __post_init__(self) -> None:
        if self.data_path is not None:
            require(self.data_path.is_file(), "data_path", f"no such file: {self.data_path}")
            require(
                self.data_path.suffix.lower() in (".csv", ".parquet", ".pq"),
                "data_path",
                f"expected a .csv or .parquet file, got {self.data_path.name}",
            )
        require(1 <= self.synthetic_days <= 3650, "synthetic_days", "must be in 1..3650")
        require(0 < self.replay_start <= 1, "replay_start", "must be in (0, 1]")
        require(self.seed >= 0, "seed", "must not be negative")
