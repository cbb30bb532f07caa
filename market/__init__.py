"""The market service: OHLCV bars of many symbols, the replay clock over them, and the paper fleet
that trades them (:mod:`market.fleet`)."""

import importlib
import typing

from market.client import MarketClient
from market.config import MarketConfig
from market.replay import AdvanceResult, IngestResult, Replay
from market.synthetic import SyntheticMarket, SyntheticMarketSpec, generate

if typing.TYPE_CHECKING:
    from market.sources import load_bars, save_bars


def __getattr__(name: str) -> typing.Any:
    # Files of bars need pyarrow, 0.05 s to import: only a process that reads or writes one
    # pays for it, not every service that imports the market's client.
    if name in ("load_bars", "save_bars"):
        return getattr(importlib.import_module("market.sources"), name)
    raise AttributeError(f"module 'market' has no attribute {name!r}")


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
