"""Settings of the memory engine (environment variables QTMESH_MEMORY_<NAME>)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from memory.advice import AdvicePolicy
from memory.episodes import Limits
from qtmesh.base.config import require, setting
from qtmesh.base.storage import DatabaseConfig

ENV_PREFIX = "QTMESH_MEMORY_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryConfig(DatabaseConfig):
    sqlite_path: Path = setting(
        Path(".qtmesh/memory.db"), help="SQLite file used when database_url is unset"
    )
    max_episodes: int = setting(100_000, help="episodes kept; the earliest stored are evicted")
    max_k: int = setting(1000, help="most episodes one Recall may return")
    max_features: int = setting(64, help="most features one episode or query may carry")
    max_feature_names: int = setting(256, help="most distinct feature names memory compares")
    recommend_k: int = setting(25, help="episodes Recommend recalls per sector")
    min_similarity: float = setting(0.5, help="Recommend ignores episodes less similar than this")
    min_support: int = setting(3, help="Recommend needs this many similar episodes of a decision")

    def __post_init__(self) -> None:
        self.check_database()
        require(self.max_episodes >= 1, "max_episodes", "must be at least 1")
        require(self.max_k >= 1, "max_k", "must be at least 1")
        require(self.max_features >= 1, "max_features", "must be at least 1")
        require(self.max_feature_names >= 1, "max_feature_names", "must be at least 1")
        require(1 <= self.recommend_k <= self.max_k, "recommend_k", "must be in 1..max_k")
        require(-1 <= self.min_similarity <= 1, "min_similarity", "must be in [-1, 1]")
        require(self.min_support >= 1, "min_support", "must be at least 1")

    def sqlite_file(self) -> Path:
        return self.sqlite_path

    @property
    def limits(self) -> Limits:
        return Limits(max_features=self.max_features)

    @property
    def advice(self) -> AdvicePolicy:
        return AdvicePolicy(min_similarity=self.min_similarity, min_support=self.min_support)
