"""Forward scenarios for simulation-based evaluation."""

from sesa.scenarios._base import ScenarioGenerator
from sesa.scenarios._bootstrap import BlockBootstrap
from sesa.scenarios._paths import series_from_log_returns

__all__ = ["BlockBootstrap", "ScenarioGenerator", "series_from_log_returns"]
