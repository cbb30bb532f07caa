"""The world model: regime detection (Gaussian HMM) and forward scenarios (block bootstrap)."""

from world_model.client import WorldModelClient
from world_model.config import WorldModelConfig
from world_model.engine import WorldModel
from world_model.regimes import RegimeReport
from world_model.scenarios import ScenarioSummary

__all__ = [
    "RegimeReport",
    "ScenarioSummary",
    "WorldModel",
    "WorldModelClient",
    "WorldModelConfig",
]
