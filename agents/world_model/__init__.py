"""The world model: regime detection (Gaussian HMM) and forward scenarios (block bootstrap)."""

from agents.world_model.client import WorldModelClient
from agents.world_model.config import WorldModelConfig
from agents.world_model.engine import WorldModel
from agents.world_model.regimes import RegimeReport
from agents.world_model.scenarios import ScenarioSummary

__all__ = [
    "RegimeReport",
    "ScenarioSummary",
    "WorldModel",
    "WorldModelClient",
    "WorldModelConfig",
]
