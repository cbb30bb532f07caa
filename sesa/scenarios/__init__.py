"""Forward scenarios for simulation-based evaluation."""

from sesa.scenarios._base import ScenarioGenerator
from sesa.scenarios._bootstrap import BlockBootstrap

__all__ = ["BlockBootstrap", "ScenarioGenerator"]
