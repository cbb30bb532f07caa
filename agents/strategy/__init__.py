"""The AI Strategy Officer: which strategies to enable, disable, reweight and promote."""

from agents.strategy.book import Entry, Record
from agents.strategy.client import StrategyOfficerClient
from agents.strategy.config import StrategyConfig
from agents.strategy.engine import StrategyOfficer
from agents.strategy.performance import Performance

__all__ = [
    "Entry",
    "Performance",
    "Record",
    "StrategyConfig",
    "StrategyOfficer",
    "StrategyOfficerClient",
]
