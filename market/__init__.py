"""The market service: OHLCV bars of many symbols, the replay clock over them, and the paper fleet
that trades them (:mod:`market.fleet`)."""

from market.client import MarketClient
from market.config import MarketConfig
from market.replay import AdvanceResult, IngestResult, Replay
from market.sources import load_bars, save_bars
from market.synthetic import SyntheticMarket, SyntheticMarketSpec, generate

__all__ = [
    "AdvanceResult",
    "IngestResult",
    "MarketClient",
    "MarketConfig",
    "Replay",
    "SyntheticMarket",
    "SyntheticMarketSpec",
    "generate",
    "load_bars",
    "save_bars",
]
