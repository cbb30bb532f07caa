"""Episodic and semantic memory in one store over SQLite or PostgreSQL (SQLAlchemy Core).

Tables: ``memory_episodes`` (one row per episode, features and tags as JSON, ``seq`` in
insertion order), ``memory_outcome_tallies`` (the semantic summaries' sufficient statistics, see
:mod:`agents.memory.summaries`) and ``memory_state`` (a version and the episode count).

Retention: at most ``max_episodes`` episodes; storing one more evicts the earliest stored
(first in, first out), and their outcomes leave the tallies in the same transaction. Every write
first bumps the version row, which serialises writers (its row lock in PostgreSQL, the write
lock in SQLite), so ``seq`` values commit in order and the count stays exact with several
replicas.

Recall is answered from an in-memory index of every episode's features (numpy arrays in
insertion order, plus running sums per feature for the z-scores). Before each recall the index
syncs with the database: one read of the version when nothing changed; otherwise it drops the
evicted prefix and loads the rows stored since. So a replica sees the others' episodes, and a
recall is a vectorised pass over N episodes by the query's features, then one fetch of the k
winners' rows.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from agents.memory.episodes import (
    Episode,
    Limits,
    Recalled,
    similarities,
    validate_episode,
    validate_features,
)
from agents.memory.summaries import OutcomeTally, SemanticSummary, summarise
from qtmesh.errors import AlreadyExists, InvalidArgument
from qtmesh.storage import SqlStore, create_engine

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY is the rowid

METADATA = sa.MetaData()
EPISODES = sa.Table(
    "memory_episodes",
    METADATA,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("time_ns", sa.BigInteger, nullable=False),
    sa.Column("decision", sa.String(200), nullable=False),
    sa.Column("outcome", sa.Double, nullable=False),
    sa.Column("regime", sa.String(64), nullable=False),
    sa.Column("sector", sa.String(64), nullable=False),
    sa.Column("features", sa.Text, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sqlite_autoincrement=True,  # never reuse a seq, even the last one's
)
TALLIES = sa.Table(
    "memory_outcome_tallies",
    METADATA,
    sa.Column("regime", sa.String(64), primary_key=True),
    sa.Column("sector", sa.String(64), primary_key=True),
    sa.Column("decision", sa.String(200), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("total", sa.Double, nullable=False),
    sa.Column("total_squares", sa.Double, nullable=False),
    sa.Column("positives", sa.BigInteger, nullable=False),
)
STATE = sa.Table(
    "memory_state",
    METADATA,
    sa.Column("singleton", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("episodes", sa.BigInteger, nullable=False),
)


@dataclasses.dataclass(frozen=True)
class StoreResult:
    id: str
    evicted: int


class EpisodeStore(SqlStore):
    """Episodes and their summaries; blocking work runs in a thread via :meth:`run`.

    ``clock`` (Unix nanoseconds) dates an episode stored without a time; it is passed in so
    that the service decides what "now" is and tests can fix it.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        clock: Callable[[], int],
        max_episodes: int,
        max_k: int = 1000,
        max_feature_names: int = 256,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(engine, METADATA)
        self.clock = clock
        self.max_episodes = max_episodes
        self.max_k = max_k
        self.max_feature_names = max_feature_names
        self.limits = limits or Limits()
        self._index = _Index()
        self._lock = threading.Lock()
        with engine.begin() as connection:
            connection.execute(
                _insert(connection)(STATE)
                .values(singleton=1, version=0, episodes=0)
                .on_conflict_do_nothing(index_elements=[STATE.c.singleton])
            )

    @classmethod
    def open(cls, url: str, **options: Any) -> EpisodeStore:
        """A store at ``url`` (sqlite:///path or postgresql://...); creates its tables."""
        return cls(create_engine(url), **options)

    # -- async API ------------------------------------------------------------------------

    async def store(self, episode: Episode) -> StoreResult:
        return await self.run(self.store_now, episode)

    async def recall(
        self, features: Mapping[str, float], *, k: int, regime: str = "", sector: str = ""
    ) -> list[Recalled]:
        return await self.run(self.recall_now, dict(features), k, regime, sector)

    async def summarize(self, *, regime: str = "", sector: str = "") -> list[SemanticSummary]:
        return await self.run(self.summarize_now, regime, sector)

    async def size(self) -> int:
        return await self.run(self.size_now)

    async def sectors(self) -> list[str]:
        """Sectors that have episodes in memory."""
        return await self.run(self.sectors_now)

    # -- blocking implementations -------------------------------------------------------------

    def store_now(self, episode: Episode) -> StoreResult:
        """Validates and stores ``episode`` (an empty id is filled in with a random one, an empty
        time with the clock's), then evicts."""
        validate_episode(episode, limits=self.limits)
        if not episode.id:
            episode = dataclasses.replace(episode, id=uuid.uuid4().hex)
        if not episode.time:
            episode = dataclasses.replace(episode, time=self.clock())
        with self._lock:
            self._sync()
            in_use = len(self._index.names)
            new = sorted(set(episode.features) - self._index.names.keys())
            if new and in_use + len(new) > self.max_feature_names:
                raise InvalidArgument(
                    f"episode.features[{new[0]}]",
                    f"memory already compares {in_use} distinct feature "
                    f"names and holds at most {self.max_feature_names}",
                )
        with self.engine.begin() as connection:
            # The version bump comes first: it takes the write lock that orders all writers.
            connection.execute(
                sa.update(STATE).values(version=STATE.c.version + 1, episodes=STATE.c.episodes + 1)
            )
            try:
                connection.execute(
                    sa.insert(EPISODES).values(
                        id=episode.id,
                        time_ns=episode.time,
                        decision=episode.decision,
                        outcome=episode.outcome,
                        regime=episode.regime,
                        sector=episode.sector,
                        features=json.dumps(dict(episode.features)),
                        tags=json.dumps(dict(episode.tags)),
                    )
                )
            except sa.exc.IntegrityError:
                raise AlreadyExists(f"episode {episode.id!r} is already stored") from None
            _add_tally(
                connection, episode.regime, episode.sector, episode.decision, [episode.outcome]
            )
            evicted = self._evict(connection)
        return StoreResult(episode.id, evicted)

    def recall_now(
        self, features: Mapping[str, float], k: int, regime: str = "", sector: str = ""
    ) -> list[Recalled]:
        """The ``k`` episodes most similar to ``features`` (see agents.memory.episodes)."""
        validate_features(features, limits=self.limits)
        if not 1 <= k <= self.max_k:
            raise InvalidArgument("k", f"must be in 1..{self.max_k} (got {k})")
        with self._lock:
            self._sync()
            index = self._index
            mask = np.ones(index.size, dtype=bool)
            if regime:
                mask &= index.codes("regime", regime, field="regime")
            if sector:
                mask &= index.codes("sector", sector, field="sector")
            names = [n for n in features if n in index.names]
            if not names:
                return []
            rows = None if regime == sector == "" else np.flatnonzero(mask)
            query = np.array([features[n] for n in names])
            z_values, z_query, shared = index.zscored(names, query, rows)
            scores = similarities(z_query, z_values)
            # Sharing names but no feature that varies: comparable, with nothing in common.
            scores[np.isnan(scores) & shared] = 0.0
            chosen = np.flatnonzero(~np.isnan(scores))
            if chosen.size > k:
                chosen = chosen[np.argpartition(-scores[chosen], k - 1)[:k]]
            seqs = index.seq[chosen if rows is None else rows[chosen]]
            # Most similar first; among equals, the most recently stored.
            order = np.lexsort((-seqs, -scores[chosen]))
            ranked = [(int(seqs[i]), float(scores[chosen][i])) for i in order]
        if not ranked:
            return []
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(EPISODES).where(EPISODES.c.seq.in_([s for s, _ in ranked]))
            ).all()
        by_seq = {row.seq: _episode(row) for row in rows}
        # An episode evicted by another writer since the index synced is skipped.
        return [Recalled(by_seq[s], score) for s, score in ranked if s in by_seq]

    def summarize_now(self, regime: str = "", sector: str = "") -> list[SemanticSummary]:
        query = sa.select(TALLIES)
        with self.engine.connect() as connection:
            for name, value in (("regime", regime), ("sector", sector)):
                if not value:
                    continue
                column = TALLIES.c[name]
                known = (
                    connection.execute(sa.select(column).distinct().order_by(column))
                    .scalars()
                    .all()
                )
                if value not in known:
                    raise InvalidArgument(name, _unknown(name, value, known))
                query = query.where(column == value)
            rows = connection.execute(query).all()
        return summarise(
            OutcomeTally(
                r.regime, r.sector, r.decision, r.count, r.total, r.total_squares, r.positives
            )
            for r in rows
        )

    def size_now(self) -> int:
        with self._lock:
            self._sync()
            return self._index.size

    def sectors_now(self) -> list[str]:
        with self._lock:
            self._sync()
            return self._index.values_in_use("sector")

    # -- internals -----------------------------------------------------------------------

    def _evict(self, connection: sa.Connection) -> int:
        count = connection.execute(sa.select(STATE.c.episodes)).scalar_one()
        excess = count - self.max_episodes
        if excess <= 0:
            return 0
        rows = connection.execute(
            sa.select(
                EPISODES.c.seq,
                EPISODES.c.regime,
                EPISODES.c.sector,
                EPISODES.c.decision,
                EPISODES.c.outcome,
            )
            .order_by(EPISODES.c.seq)
            .limit(excess)
        ).all()
        connection.execute(sa.delete(EPISODES).where(EPISODES.c.seq <= rows[-1].seq))
        connection.execute(sa.update(STATE).values(episodes=STATE.c.episodes - len(rows)))
        groups: dict[tuple[str, str, str], list[float]] = {}
        for row in rows:
            groups.setdefault((row.regime, row.sector, row.decision), []).append(row.outcome)
        for (regime, sector, decision), outcomes in groups.items():
            _remove_tally(connection, regime, sector, decision, outcomes)
        return len(rows)

    def _sync(self) -> None:
        """Brings the index up to date with the database (call with the lock held)."""
        index = self._index
        with self.engine.connect() as connection:
            version = connection.execute(sa.select(STATE.c.version)).scalar_one()
            if version == index.version:
                return
            oldest = connection.execute(sa.select(sa.func.min(EPISODES.c.seq))).scalar()
            index.drop_before(oldest if oldest is not None else index.last_seq + 1)
            rows = connection.execute(
                sa.select(EPISODES.c.seq, EPISODES.c.regime, EPISODES.c.sector, EPISODES.c.features)
                .where(EPISODES.c.seq > index.last_seq)
                .order_by(EPISODES.c.seq)
            ).all()
        index.append([(r.seq, r.regime, r.sector, json.loads(r.features)) for r in rows])
        index.version = version


def _insert(connection: sa.Connection) -> Any:
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


def _add_tally(
    connection: sa.Connection, regime: str, sector: str, decision: str, outcomes: Sequence[float]
) -> None:
    insert = _insert(connection)(TALLIES).values(
        regime=regime,
        sector=sector,
        decision=decision,
        count=len(outcomes),
        total=float(sum(outcomes)),
        total_squares=float(sum(o * o for o in outcomes)),
        positives=sum(1 for o in outcomes if o > 0),
    )
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=[TALLIES.c.regime, TALLIES.c.sector, TALLIES.c.decision],
            set_={
                name: TALLIES.c[name] + insert.excluded[name]
                for name in ("count", "total", "total_squares", "positives")
            },
        )
    )


def _remove_tally(
    connection: sa.Connection, regime: str, sector: str, decision: str, outcomes: Sequence[float]
) -> None:
    key = (
        (TALLIES.c.regime == regime)
        & (TALLIES.c.sector == sector)
        & (TALLIES.c.decision == decision)
    )
    connection.execute(
        sa.update(TALLIES)
        .where(key)
        .values(
            count=TALLIES.c.count - len(outcomes),
            total=TALLIES.c.total - float(sum(outcomes)),
            total_squares=TALLIES.c.total_squares - float(sum(o * o for o in outcomes)),
            positives=TALLIES.c.positives - sum(1 for o in outcomes if o > 0),
        )
    )
    connection.execute(sa.delete(TALLIES).where(key & (TALLIES.c.count <= 0)))


def _episode(row: Any) -> Episode:
    return Episode(
        id=row.id,
        time=row.time_ns,
        features=json.loads(row.features),
        decision=row.decision,
        outcome=row.outcome,
        regime=row.regime,
        sector=row.sector,
        tags=json.loads(row.tags),
    )


def _unknown(name: str, value: str, known: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in known[:20]) or "none"
    return f"unknown {name} {value!r}: memory holds episodes of {shown}"


# Spreads relative to the root mean square: at most this, E[x^2] - E[x]^2 in float64 is rounding
# (cancellation leaves about sqrt(eps) of the size); below the doubtful one, running sums that
# saw evictions may hold more rounding than that and are recounted first.
_FLAT_SPREAD = float(np.sqrt(64 * np.finfo(np.float64).eps))
_DOUBTFUL_SPREAD = 1e-4


class _Index:
    """Features of the episodes in memory, in insertion order, as arrays.

    Columns ``[start, end)`` of the buffers are live; eviction only ever removes the oldest, so
    it moves ``start``. Values are stored feature-major (one contiguous row per feature name), so
    a recall reads only its query's features; missing ones are NaN. Per feature, the count, sum
    and sum of squares of the live values give the z-score statistics without a pass over them.

    ``names`` holds only the names some live episode has. When eviction takes the last value of
    a name, its row is freed and the next new name reuses it, so the rows never outnumber the
    names in use at once (which the store bounds by ``max_feature_names``) however many
    distinct names pass through memory.
    """

    def __init__(self) -> None:
        self.version = -1
        self.last_seq = 0
        self.names: dict[str, int] = {}
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

    @property
    def size(self) -> int:
        return self._end - self._start

    @property
    def seq(self) -> np.ndarray:
        return self._seq[self._start : self._end]

    @property
    def feature_rows(self) -> int:
        """Rows of the values matrix: names in use plus freed rows awaiting reuse."""
        return self._values.shape[0]

    def codes(self, kind: str, label: str, *, field: str) -> np.ndarray:
        """Mask of the live episodes labelled ``label``; InvalidArgument if none is."""
        live = self._codes[kind][self._start : self._end]
        code = self._labels[kind].get(label)
        mask = live == code if code is not None else np.zeros(self.size, dtype=bool)
        if not mask.any():
            raise InvalidArgument(field, _unknown(kind, label, self.values_in_use(kind)))
        return mask

    def values_in_use(self, kind: str) -> list[str]:
        labels = self._labels[kind]
        counts = np.bincount(self._codes[kind][self._start : self._end], minlength=len(labels))
        return sorted(label for label, code in labels.items() if label and counts[code] > 0)

    def zscored(
        self, names: Sequence[str], query: np.ndarray, rows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The values of ``names`` of the live episodes ``rows`` (None: all), as an (N, F) view,
        and of the query, z-scored (a feature that does not vary is all NaN), and which of the
        episodes have any of ``names`` at all."""
        columns = [self.names[n] for n in names]
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
            values = self._values[np.ix_(columns, self._start + rows)]
        if np.all(count == self.size):
            shared = np.ones(values.shape[1], dtype=bool)  # every episode has every feature
        else:
            shared = ~np.isnan(values).all(axis=0)
        values -= mean[:, None]
        values /= spread[:, None]
        return values.T, (query - mean) / spread, shared

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

    def drop_before(self, seq: int) -> None:
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
        gone = [n for n, row in self.names.items() if self._count[row] == 0]
        for name in gone:
            row = self.names.pop(name)
            # Exact zeros, not the rounding left by the subtractions: a reused row starts clean.
            self._count[row] = self._sum[row] = self._squares[row] = 0.0
            self._drifted[row] = False
            self._free.append(row)

    def append(self, rows: Sequence[tuple[int, str, str, Mapping[str, float]]]) -> None:
        if not rows:
            return
        for _, _, _, features in rows:
            for name in features:
                if name not in self.names:
                    # Safe to reuse: a freed row is NaN for every live episode.
                    self.names[name] = self._free.pop() if self._free else len(self.names)
        self._reserve(len(rows))
        block = np.full((self.feature_rows, len(rows)), np.nan)
        for i, (seq, regime, sector, features) in enumerate(rows):
            self._seq[self._end + i] = seq
            self._codes["regime"][self._end + i] = self._label("regime", regime)
            self._codes["sector"][self._end + i] = self._label("sector", sector)
            for name, value in features.items():
                block[self.names[name], i] = value
        self._values[:, self._end : self._end + len(rows)] = block
        self._count += (~np.isnan(block)).sum(axis=1)
        self._sum += np.nansum(block, axis=1)
        self._squares += np.nansum(block * block, axis=1)
        self._end += len(rows)
        self.last_seq = int(rows[-1][0])

    def _label(self, kind: str, label: str) -> int:
        return self._labels[kind].setdefault(label, len(self._labels[kind]))

    def _reserve(self, more: int) -> None:
        """Room for ``more`` episodes and every known name; compacts and recomputes the sums."""
        columns = len(self.names) + len(self._free)
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
