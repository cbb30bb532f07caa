"""The world model: regime detection (Gaussian HMM), the market's regime changes as a stream,
and forward scenarios (block bootstrap)."""

from world_model.client import WorldModelClient
from world_model.config import WorldModelConfig
from world_model.engine import WorldModel
from world_model.regimes import RegimeReport
from world_model.scenarios import ScenarioSummary
from world_model.watch import RegimeChange

__all__ = [
    "RegimeChange",
    "RegimeReport",
    "ScenarioSummary",
    "WorldModel",
    "WorldModelClient",
    "WorldModelConfig",
]
