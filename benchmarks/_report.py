"""Shared helpers of the benchmarks: percentiles and the final JSON line."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np


def percentiles_ms(samples_s: Sequence[float], *qs: float) -> list[float]:
    """Percentiles of durations given in seconds, in milliseconds rounded to 3 decimals."""
    values = np.percentile(np.asarray(samples_s) * 1000, qs)
    return [round(float(v), 3) for v in values]


def emit(figures: dict[str, Any]) -> None:
    """Prints ``figures`` (plus the machine) as one JSON object on the last line."""
    figures = {**figures, "cpus": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps(figures, sort_keys=False))
