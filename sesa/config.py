"""Settings of the SESA server (environment variables QTMESH_SESA_<NAME>)."""

from __future__ import annotations

import dataclasses

from qtmesh.base.config import require, setting
from qtmesh.base.storage import DataDirConfig

ENV_PREFIX = "QTMESH_SESA_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SesaConfig(DataDirConfig):
    """SESA's settings; its state is the evolution event log (``sesa.db`` in ``data_dir``, or
    ``database_url``)."""

    database_file = "sesa.db"

    symbols: tuple[str, ...] = setting(
        ("ORBT",), help="symbols evolved on when a request or an action names none"
    )
    commission_bps: float = setting(1.0, help="default commission, basis points per unit traded")
    slippage_bps: float = setting(1.0, help="default slippage, basis points per fill")
    walk_forward_folds: int = setting(4, help="walk-forward folds; the first is in sample")
    embargo_minutes: float = setting(
        60.0,
        help="market minutes without entries after each fold boundary, in bars at the data's "
        "spacing rounded up (60 minute bars, one daily bar)",
    )
    scenario_block_bars: int = setting(60, help="block length of the scenario bootstrap")
    max_genomes: int = setting(5000, help="largest batch an Evaluate, Mutate or Select takes")
    max_bars: int = setting(1_000_000, help="largest bar window evaluated")
    cached_windows: int = setting(8, help="bar windows (with their indicators) kept in memory")
    meta_timeout_seconds: float = setting(
        5.0,
        help="deadline of reading meta's parameters for RUN_EVOLUTION; past it (or with meta "
        "down) the evolution runs on SESA's own defaults",
    )
    world_model_scenarios: bool = setting(
        True,
        help="draw a SIMULATION's scenario paths from the world model's regime-conditioned "
        "Simulate; off (or with the world model down or refusing), SESA's own block bootstrap",
    )
    world_model_timeout_seconds: float = setting(
        30.0, help="deadline of each Simulate call for a SIMULATION's scenario paths"
    )
    record_to_memory: bool = setting(
        True,
        help="store every finished evolution in the memory engine (in the background; an "
        "evolution never waits for memory)",
    )
    recall_from_memory: bool = setting(
        True,
        help="recall past evolutions on the symbols in similar market contexts before "
        "recommending RUN_EVOLUTION (see sesa/memory.py)",
    )
    memory_timeout_seconds: float = setting(
        2.0,
        help="deadline of the market snapshot and recall behind a RUN_EVOLUTION recommendation; "
        "past it SESA recommends on its own",
    )

    cluster_address: str = setting(
        "",
        help="Dask scheduler (tcp://host:8786) whose workers backtest the populations of "
        "Evolve, Evaluate and RUN_EVOLUTION; empty: in this process. The workers need this "
        "project installed (its image)",
    )
    cluster_task_size: int = setting(
        64, help="genomes per task sent to a cluster worker (cluster_address)"
    )
    cluster_connect_seconds: float = setting(
        30.0, help="how long SESA's start waits for the cluster_address scheduler to answer"
    )

    kept_events: int = setting(
        10_000,
        help="evolution events kept for WatchEvolutions to resume from; older ones are dropped",
    )
    watch_queue_events: int = setting(
        1000,
        help="events a WatchEvolutions subscriber may fall behind before it is cut off "
        "(RESOURCE_EXHAUSTED, with the sequence to resume after)",
    )

    def __post_init__(self) -> None:
        self.check_database()
        require(self.kept_events >= 1, "kept_events", "must be at least 1")
        require(self.watch_queue_events >= 1, "watch_queue_events", "must be at least 1")
        require(bool(self.symbols), "symbols", "name at least one symbol")
        require(self.cluster_task_size >= 1, "cluster_task_size", "must be at least 1")
        require(self.cluster_connect_seconds > 0, "cluster_connect_seconds", "must be positive")
        for name in ("commission_bps", "slippage_bps"):
            require(0 <= getattr(self, name) <= 1000, name, "must be in 0..1000")
        require(2 <= self.walk_forward_folds <= 20, "walk_forward_folds", "must be in 2..20")
        require(self.embargo_minutes >= 0, "embargo_minutes", "must not be negative")
        require(self.scenario_block_bars >= 1, "scenario_block_bars", "must be at least 1")
        require(self.max_genomes >= 1, "max_genomes", "must be at least 1")
        require(self.max_bars >= 1000, "max_bars", "must be at least 1000")
        require(self.cached_windows >= 1, "cached_windows", "must be at least 1")
        require(0 < self.meta_timeout_seconds <= 600, "meta_timeout_seconds", "must be in (0, 600]")
        require(
            0 < self.world_model_timeout_seconds <= 600,
            "world_model_timeout_seconds",
            "must be in (0, 600]",
        )
        require(
            0 < self.memory_timeout_seconds <= 60, "memory_timeout_seconds", "must be in (0, 60]"
        )

    @property
    def uses_memory(self) -> bool:
        return self.record_to_memory or self.recall_from_memory
