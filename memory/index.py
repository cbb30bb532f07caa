"""The in-memory similarity index behind recall: every episode in memory's features, as arrays.

What it holds. For each episode in memory, in insertion (``seq``) order: its ``seq``, its
regime and sector (as small integer codes) and its feature values, stored feature-major (one
contiguous row per feature name, NaN where an episode lacks the feature), so a recall reads
only its query's features. Per feature row it also keeps the count, sum and sum of squares of
the live values, which give the z-score statistics without a pass over them. ``names`` maps
only the feature names some live episode has to their rows; when eviction takes a name's last
value its row is freed and the next new name reuses it, so the rows never outnumber the most
names in use at once (which the store bounds by ``max_feature_names`` before it stores an
episode), however many distinct names pass through memory.

How it stays consistent with the database. The index is a cache of the ``seq``, regime, sector
and features of the rows of ``memory_episodes``; it never reads the database, and only
:class:`memory.store.EpisodeStore` changes it, under the store's lock, when it syncs:

* the store reads the state version and does nothing more if the index already reflects it;
* otherwise it calls :meth:`EpisodeIndex.drop_before` with the smallest ``seq`` left in the
  table (one past :attr:`EpisodeIndex.last_seq` when the table is empty), then
  :meth:`EpisodeIndex.append` with the rows whose ``seq`` is above ``last_seq``, in order.

That suffices because of two rules the store's writes keep: ``seq`` values commit in increasing
order (every writer first bumps the version row, which serialises them), and eviction deletes
only the oldest episodes (first in, first out). So the table always holds exactly the episodes
from its smallest ``seq`` on, and the index is the same list, up to the rows it has yet to load.
Between syncs it may lag other replicas' writes: a recall can rank an episode another writer
evicted since, which the store skips when it fetches the winners' rows.

Numbers. Appending adds to the running sums and eviction subtracts from them, which leaves
rounding; a feature whose sums lost values since they were last counted exactly, and whose
spread is small enough for that rounding to matter, is recounted from the live values once, on
the first search that needs it, rather than on every search. A spread that
E[x^2] - E[x]^2 cannot resolve next to the values' size counts as none: the feature is
constant and is left out of the similarity. Every compaction recomputes all sums exactly.

Complexity, with N live episodes, R feature rows (at most ``max_feature_names``), F of the
query's features that memory holds and M the episodes left by the regime and sector filters:

* search (recall): O(N) for the filters, O(F * M) for the z-scores and similarities, O(M) to
  pick the k best and O(k log k) to order them; plus, on the first search after an eviction, a
  recount of the doubtful features, O(N) each.
* append (store): O(R) per episode appended, amortised: the buffers grow to twice the live
  episodes when full, and compacting them (O(R * N), exact sums again) pays for the N appends
  before it; a new name with no freed row to reuse also compacts, which happens at most once
  per row ever added.
* drop_before (evict): O(log N) to find the cut, O(R * E) for the E episodes evicted, O(R) to
  free the rows of names left with no value; no values move (the live window's start does).
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence

import numpy as np

from memory.episodes import similarities
from qtmesh.base.errors import InvalidArgument

# Spreads relative to the root mean square: at most this, E[x^2] - E[x]^2 in float64 is rounding
# (cancellation leaves about sqrt(eps) of the size); below the doubtful one, running sums that
# saw evictions may hold more rounding than that and are recounted first.
_FLAT_SPREAD = float(np.sqrt(64 * np.finfo(np.float64).eps))
_DOUBTFUL_SPREAD = 1e-4


def unknown_label(name: str, value: str, known: Sequence[str]) -> str:
    """The InvalidArgument message for a regime or sector no episode in memory has."""
    shown = ", ".join(repr(k) for k in known[:20]) or "none"
    return f"unknown {name} {value!r}: memory holds episodes of {shown}"


class EpisodeIndex:
    """Features of the episodes in memory, in insertion order, as arrays (see the module).

    Columns ``[start, end)`` of the buffers are live; eviction only ever removes the oldest, so
    it moves ``start``.

    Interface: :meth:`append` (episodes stored since, in ``seq`` order), :meth:`drop_before`
    (the evicted oldest), :meth:`search` (the k nearest), and the read-only :attr:`size`,
    :attr:`seq`, :attr:`last_seq`, :attr:`names`, :attr:`feature_rows` and
    :meth:`values_in_use`. Not thread-safe: the store calls it with its lock held.
    """

    def __init__(self) -> None:
        self._last_seq = 0
        self._names: dict[str, int] = {}
        self._free: list[int] = []  # rows of names no live episode has any more
        self._labels: dict[str, dict[str, int]] = {"regime": {}, "sector": {}}
        self._start = self._end = 0
        self._seq = np.empty(0, dtype=np.int64)
        self._codes = {"regime": np.empty(0, dtype=np.int32), "sector": np.empty(0, dtype=np.int32)}
        self._values = np.empty((0, 0))
        self._count = np.empty(0)
        # Rows whose running sums lost values since they were last counted exactly.
        self._drifted = np.zeros(0, dtype=bool)
        self._sum = np.empty(0)
        self._squares = np.empty(0)

    # -- read-only views ----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Live episodes."""
        return self._end - self._start

    @property
    def seq(self) -> np.ndarray:
        """The live episodes' ``seq``, increasing."""
        return self._seq[self._start : self._end]

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the last episode appended (0 before any), evicted or not."""
        return self._last_seq

    @property
    def names(self) -> Mapping[str, int]:
        """Feature names some live episode has, each to its row."""
        return types.MappingProxyType(self._names)

    @property
    def feature_rows(self) -> int:
        """Rows of the values matrix: names in use plus freed rows awaiting reuse."""
        return self._values.shape[0]

    def values_in_use(self, kind: str) -> list[str]:
        """The non-empty regimes or sectors (``kind``) of the live episodes, sorted."""
        labels = self._labels[kind]
        counts = np.bincount(self._codes[kind][self._start : self._end], minlength=len(labels))
        return sorted(label for label, code in labels.items() if label and counts[code] > 0)

    # -- search -------------------------------------------------------------------------------

    def search(
        self, features: Mapping[str, float], k: int, *, regime: str = "", sector: str = ""
    ) -> list[tuple[int, float]]:
        """The ``k`` live episodes most similar to ``features`` (see memory.episodes)
        among those of ``regime`` and ``sector`` (empty: any), as ``(seq, similarity)``, most
        similar first and, among equals, the most recently stored first.

        InvalidArgument if ``regime`` or ``sector`` is given and no live episode has it."""
        mask = np.ones(self.size, dtype=bool)
        if regime:
            mask &= self._labelled("regime", regime)
        if sector:
            mask &= self._labelled("sector", sector)
        names = [n for n in features if n in self._names]
        if not names:
            return []
        rows = None if regime == sector == "" else np.flatnonzero(mask)
        query = np.array([features[n] for n in names])
        z_values, z_query, shared = self.zscored(names, query, rows)
        scores = similarities(z_query, z_values)
        # Sharing names but no feature that varies: comparable, with nothing in common.
        scores[np.isnan(scores) & shared] = 0.0
        chosen = np.flatnonzero(~np.isnan(scores))
        if chosen.size > k:
            chosen = chosen[np.argpartition(-scores[chosen], k - 1)[:k]]
        seqs = self.seq[chosen if rows is None else rows[chosen]]
        # Most similar first; among equals, the most recently stored.
        order = np.lexsort((-seqs, -scores[chosen]))
        return [(int(seqs[i]), float(scores[chosen][i])) for i in order]

    def zscored(
        self, names: Sequence[str], query: np.ndarray, rows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The values of ``names`` of the live episodes ``rows`` (None: all), as an (N, F) view,
        and of the query, z-scored (a feature that does not vary is all NaN), and which of the
        episodes have any of ``names`` at all."""
        columns = [self._names[n] for n in names]
        count, mean, spread, rms = self._moments(columns)
        # Evictions leave rounding in the running sums that can pass for a spread; where it
        # could, the sums are recounted from the live values, which a fresh load would hold,
        # once per eviction rather than on every recall.
        doubtful = (count > 0) & self._drifted[columns]
        doubtful[doubtful] = spread[doubtful] <= _DOUBTFUL_SPREAD * rms[doubtful]
        if doubtful.any():
            self._recount(np.asarray(columns)[doubtful])
            count, mean, spread, rms = self._moments(columns)
        # E[x^2] - E[x]^2 cannot resolve a spread this small next to the values' size: whatever
        # it shows is rounding, so the feature counts as constant.
        flat = ~(spread > _FLAT_SPREAD * rms) | (count == 0)
        spread = np.where(flat, np.nan, spread)
        if rows is None:
            values = self._values[columns, self._start : self._end]
        else:
            values = self._values[np.ix_(np.asarray(columns), self._start + rows)]
        shared: np.ndarray
        if np.all(count == self.size):
            shared = np.ones(values.shape[1], dtype=bool)  # every episode has every feature
        else:
            shared = np.asarray(~np.isnan(values).all(axis=0))
        values -= mean[:, None]
        values /= spread[:, None]
        return values.T, (query - mean) / spread, shared

    def _labelled(self, kind: str, label: str) -> np.ndarray:
        """Mask of the live episodes labelled ``label``; InvalidArgument if none is."""
        live = self._codes[kind][self._start : self._end]
        code = self._labels[kind].get(label)
        mask = live == code if code is not None else np.zeros(self.size, dtype=bool)
        if not mask.any():
            raise InvalidArgument(kind, unknown_label(kind, label, self.values_in_use(kind)))
        return mask

    def _moments(self, columns: Sequence[int]) -> tuple[np.ndarray, ...]:
        """Count, mean, population standard deviation and root mean square of ``columns``."""
        count = self._count[columns]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self._sum[columns] / count
            mean_square = self._squares[columns] / count
        spread = np.sqrt(np.maximum(mean_square - mean * mean, 0.0))
        return count, mean, spread, np.sqrt(mean_square)

    def _recount(self, columns: np.ndarray) -> None:
        live = self._values[columns, self._start : self._end]
        self._count[columns] = (~np.isnan(live)).sum(axis=1)
        self._sum[columns] = np.nansum(live, axis=1)
        self._squares[columns] = np.nansum(live * live, axis=1)
        self._drifted[columns] = False

    # -- changes ------------------------------------------------------------------------------

    def drop_before(self, seq: int) -> None:
        """Evicts the live episodes whose ``seq`` is below ``seq`` and frees the rows of the
        names no live episode has any more."""
        cut = self._start + int(np.searchsorted(self.seq, seq, "left"))
        if cut == self._start:
            return
        dropped = self._values[:, self._start : cut]
        lost = (~np.isnan(dropped)).sum(axis=1)
        self._drifted |= lost > 0
        self._count -= lost
        self._sum -= np.nansum(dropped, axis=1)
        self._squares -= np.nansum(dropped * dropped, axis=1)
        self._start = cut
        if self.size == 0:
            self._start = self._end = 0
        gone = [n for n, row in self._names.items() if self._count[row] == 0]
        for name in gone:
            row = self._names.pop(name)
            # Exact zeros, not the rounding left by the subtractions: a reused row starts clean.
            self._count[row] = self._sum[row] = self._squares[row] = 0.0
            self._drifted[row] = False
            self._free.append(row)

    def append(self, rows: Sequence[tuple[int, str, str, Mapping[str, float]]]) -> None:
        """Adds episodes as ``(seq, regime, sector, features)``, in increasing ``seq`` order,
        each above :attr:`last_seq`."""
        if not rows:
            return
        for _, _, _, features in rows:
            for name in features:
                if name not in self._names:
                    # Safe to reuse: a freed row is NaN for every live episode.
                    self._names[name] = self._free.pop() if self._free else len(self._names)
        self._reserve(len(rows))
        block = np.full((self.feature_rows, len(rows)), np.nan)
        for i, (seq, regime, sector, features) in enumerate(rows):
            self._seq[self._end + i] = seq
            self._codes["regime"][self._end + i] = self._label("regime", regime)
            self._codes["sector"][self._end + i] = self._label("sector", sector)
            for name, value in features.items():
                block[self._names[name], i] = value
        self._values[:, self._end : self._end + len(rows)] = block
        self._count += (~np.isnan(block)).sum(axis=1)
        self._sum += np.nansum(block, axis=1)
        self._squares += np.nansum(block * block, axis=1)
        self._end += len(rows)
        self._last_seq = int(rows[-1][0])

    def _label(self, kind: str, label: str) -> int:
        return self._labels[kind].setdefault(label, len(self._labels[kind]))

    def _reserve(self, more: int) -> None:
        """Room for ``more`` episodes and every known name; compacts and recomputes the sums."""
        columns = len(self._names) + len(self._free)
        if self._end + more <= self._seq.shape[0] and columns <= self.feature_rows:
            return
        live = slice(self._start, self._end)
        capacity = max(1024, 2 * (self.size + more))
        seq = np.zeros(capacity, dtype=np.int64)
        seq[: self.size] = self._seq[live]
        codes = {}
        for kind, old in self._codes.items():
            codes[kind] = np.zeros(capacity, dtype=np.int32)
            codes[kind][: self.size] = old[live]
        values = np.full((columns, capacity), np.nan)
        values[: self._values.shape[0], : self.size] = self._values[:, live]
        self._seq, self._codes, self._values = seq, codes, values
        self._end, self._start = self.size, 0
        # Exact sums again, so add-and-subtract rounding never accumulates past a compaction.
        current = values[:, : self._end]
        self._count = (~np.isnan(current)).sum(axis=1).astype(np.float64)
        self._sum = np.nansum(current, axis=1)
        self._squares = np.nansum(current * current, axis=1)
        self._drifted = np.zeros(columns, dtype=bool)
