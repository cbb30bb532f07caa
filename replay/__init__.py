"""The replay: the market's clock moved as fast as the mesh can follow, with the whole mesh in
the loop (plans at a cadence, end-of-day reports and audits, evolutions, meta updates), against
the same fleet left static on the same bars. ``qtmesh replay`` is its command;
benchmarks/closed_loop.py compares the two over seeds.
"""

from replay.config import Arm, MarketSource, ReplayConfig
from replay.driver import MeshClients, Progress, ReplayRun, run
from replay.metrics import CurveMetrics, curve_metrics, drawdowns, paired_p_value
from replay.report import ArmSummary, document, summary

__all__ = [
    "Arm",
    "ArmSummary",
    "CurveMetrics",
    "MarketSource",
    "MeshClients",
    "Progress",
    "ReplayConfig",
    "ReplayRun",
    "curve_metrics",
    "document",
    "drawdowns",
    "paired_p_value",
    "run",
    "summary",
]
