"""Forward scenarios by block bootstrap of historical returns, optionally regime-conditioned.

The method is the stationary bootstrap of Politis & Romano (1994): a path is built from blocks
of consecutive historical returns; each block starts at a uniformly drawn bar and each further
step ends the block with probability 1/``block_size`` (so block lengths are geometric with mean
``block_size``), wrapping around the end of the history. Blocks keep the short-range dependence
(volatility clustering, autocorrelation) that an iid bootstrap destroys; ``block_size=1`` is
the iid bootstrap.

Regime-conditioned: only bars whose regime label equals ``current_regime`` are drawn, i.e. the
bootstrap runs over the regime's history with its episodes joined end to end (a join is just one
more block boundary, as the wrap-around is).

Paths are cumulative log returns; :func:`simulate` is pure and in-process, so SESA can call it
directly, and :func:`simulate_terminal` gives only the terminal values (the same draws) in the
memory of one chunk of paths. Work proceeds in chunks of paths and checks ``cancel`` between
them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from qtmesh.base.concurrency import CancelToken
from qtmesh.base.errors import InvalidArgument

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_CHUNK_VALUES = 1 << 18  # values per chunk: bounds memory and the time to notice a cancel


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ScenarioSummary:
    """What a simulation says: terminal cumulative log returns at the requested quantiles."""

    symbol: str
    sector: str
    horizon: int
    num_paths: int
    block_size: int
    history: int  # returns the bootstrap drew from
    regime: str  # the current regime of the series
    regime_conditioned: bool
    quantiles: tuple[float, ...]
    terminal_returns: tuple[float, ...]
    paths: np.ndarray | None = None  # (num_paths, horizon) when asked for


def simulate(
    returns: np.ndarray,
    *,
    horizon: int,
    num_paths: int,
    block_size: float,
    rng: np.random.Generator,
    regime_labels: np.ndarray | None = None,
    current_regime: int | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """``num_paths`` x ``horizon`` cumulative log returns by stationary block bootstrap."""
    paths = np.empty((num_paths, max(horizon, 0)))
    for first, chunk in _chunks(
        returns, horizon, num_paths, block_size, rng, regime_labels, current_regime, cancel
    ):
        np.cumsum(chunk, axis=1, out=paths[first : first + chunk.shape[0]])
    return paths


def simulate_terminal(
    returns: np.ndarray,
    *,
    horizon: int,
    num_paths: int,
    block_size: float,
    rng: np.random.Generator,
    regime_labels: np.ndarray | None = None,
    current_regime: int | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """The last column of :func:`simulate` (same draws), in memory of one chunk of paths."""
    terminal = np.empty(num_paths)
    for first, chunk in _chunks(
        returns, horizon, num_paths, block_size, rng, regime_labels, current_regime, cancel
    ):
        terminal[first : first + chunk.shape[0]] = chunk.sum(axis=1)
    return terminal


def _chunks(
    returns: np.ndarray,
    horizon: int,
    num_paths: int,
    block_size: float,
    rng: np.random.Generator,
    labels: np.ndarray | None,
    current: int | None,
    cancel: CancelToken | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(first path, the drawn returns of a chunk of paths), chunk after chunk."""
    pool = _pool(returns, labels, current)
    if horizon < 1:
        raise InvalidArgument("horizon", f"must be at least 1 (got {horizon})")
    if num_paths < 1:
        raise InvalidArgument("num_paths", f"must be at least 1 (got {num_paths})")
    if not block_size >= 1:
        raise InvalidArgument("block_size", f"must be at least 1 (got {block_size})")
    chunk = max(1, _CHUNK_VALUES // horizon)
    steps = np.arange(horizon)
    n = pool.shape[0]
    for first in range(0, num_paths, chunk):
        if cancel is not None:
            cancel.raise_if_cancelled()
        rows = min(chunk, num_paths - first)
        new_block = rng.random((rows, horizon)) < 1.0 / block_size
        new_block[:, 0] = True
        starts = rng.integers(0, n, size=(rows, horizon))
        # Position where each step's block began, then the step's offset inside that block.
        began = np.where(new_block, steps, 0)
        np.maximum.accumulate(began, axis=1, out=began)
        index = (np.take_along_axis(starts, began, axis=1) + (steps - began)) % n
        yield first, pool[index]


def terminal_quantiles(terminal: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """The ``quantiles`` (linear interpolation) of terminal values, or of paths' last column."""
    check_quantiles(quantiles)
    values = terminal[:, -1] if terminal.ndim == 2 else terminal
    return np.quantile(values, np.asarray(quantiles, dtype=np.float64))


def check_quantiles(quantiles: Sequence[float], *, field: str = "quantiles") -> None:
    for i, q in enumerate(quantiles):
        if not 0 < q < 1:
            raise InvalidArgument(f"{field}[{i}]", f"{q} is not in (0, 1)")


def _pool(returns: np.ndarray, labels: np.ndarray | None, current: int | None) -> np.ndarray:
    returns = np.asarray(returns, dtype=np.float64)
    if returns.ndim != 1 or returns.shape[0] == 0:
        raise InvalidArgument("returns", "needs at least one return")
    bad = np.flatnonzero(~np.isfinite(returns))
    if bad.size:
        raise InvalidArgument(f"returns[{bad[0]}]", f"{returns[bad[0]]} is not a finite number")
    if labels is None:
        if current is not None:
            raise InvalidArgument("regime_labels", "are needed to condition on current_regime")
        return returns
    labels = np.asarray(labels)
    if labels.shape != returns.shape:
        raise InvalidArgument(
            "regime_labels", f"needs one label per return ({labels.shape[0]} != {returns.shape[0]})"
        )
    if current is None:
        raise InvalidArgument("current_regime", "must be given with regime_labels")
    pool = returns[labels == current]
    if pool.shape[0] == 0:
        raise InvalidArgument("current_regime", f"no history is labelled {current}")
    return pool
