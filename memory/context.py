"""The context features the memory engine describes a sector's situation with.

From a market snapshot, per sector: its 24 h return and annualised 24 h volatility (the mean of
its symbols', as the market reports them), the market's (the mean over sectors) and the sector's
return relative to the market. Whoever stores episodes for the memory engine to recall from
should describe contexts with :func:`sector_features` too, so that the names and scales match.
Callers may add features through the planning context's hints, as ``feature.<name>`` = number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from qtmesh.base.bars import Snapshot
from qtmesh.base.errors import InvalidArgument

FEATURE_HINT = "feature."


def sector_features(snapshot: Snapshot, sector: str) -> dict[str, float]:
    summaries = {s.sector: s for s in snapshot.sectors}
    if sector not in summaries:
        known = ", ".join(sorted(summaries))
        raise InvalidArgument("sector", f"unknown sector {sector!r} (known: {known})")
    own = summaries[sector]
    market_return = float(np.mean([s.return_24h for s in snapshot.sectors]))
    market_volatility = float(np.mean([s.volatility_24h for s in snapshot.sectors]))
    return {
        "return_24h": own.return_24h,
        "volatility_24h": own.volatility_24h,
        "market_return_24h": market_return,
        "market_volatility_24h": market_volatility,
        "relative_return_24h": own.return_24h - market_return,
    }


def hinted_features(hints: Mapping[str, str]) -> dict[str, float]:
    """Features given as ``feature.<name>`` hints; a value that is not a finite number is an
    InvalidArgument naming the hint."""
    features = {}
    for key, text in hints.items():
        if not key.startswith(FEATURE_HINT):
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise InvalidArgument(f"context.hints[{key}]", f"{text!r} is not a finite number")
        features[key.removeprefix(FEATURE_HINT)] = value
    return features
