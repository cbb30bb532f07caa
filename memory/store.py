"""Episodic and semantic memory in one store over SQLite or PostgreSQL (SQLAlchemy Core).

Tables: ``memory_episodes`` (one row per episode, features and tags as JSON, ``seq`` in
insertion order), ``memory_outcome_tallies`` (the semantic summaries' sufficient statistics, see
:mod:`memory.summaries`) and ``memory_state`` (a version and the episode count).

Retention: at most ``max_episodes`` episodes; storing one more evicts the earliest stored
(first in, first out), and their outcomes leave the tallies in the same transaction. Every write
first bumps the version row, which serialises writers (its row lock in PostgreSQL, the write
lock in SQLite), so ``seq`` values commit in order and the count stays exact with several
replicas.

Recall is answered from an in-memory index of every episode's features
(:class:`memory.index.EpisodeIndex`: numpy arrays in insertion order, plus running sums
per feature for the z-scores). Before each recall the store syncs the index with the database:
one read of the version when nothing changed; otherwise it drops the evicted prefix and loads
the rows stored since. So a replica sees the others' episodes, and a recall is a vectorised
pass over N episodes by the query's features, then one fetch of the k winners' rows.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from memory.episodes import Episode, Limits, Recalled, validate_episode, validate_features
from memory.index import EpisodeIndex, unknown_label
from memory.summaries import OutcomeTally, SemanticSummary, summarise
from qtmesh.base.errors import AlreadyExists, InvalidArgument
from qtmesh.base.storage import Migrations, SqlStore, create_engine

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


# The schema's revisions (qtmesh.base.storage.Migrations).
MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "memory_alembic_version")


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
        super().__init__(engine, MIGRATIONS)
        self.clock = clock
        self.max_episodes = max_episodes
        self.max_k = max_k
        self.max_feature_names = max_feature_names
        self.limits = limits or Limits()
        self._index = EpisodeIndex()
        self._version = -1  # of the database state the index reflects; -1: none yet
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
        """The ``k`` episodes most similar to ``features`` (see memory.episodes)."""
        validate_features(features, limits=self.limits)
        if not 1 <= k <= self.max_k:
            raise InvalidArgument("k", f"must be in 1..{self.max_k} (got {k})")
        with self._lock:
            self._sync()
            ranked = self._index.search(features, k, regime=regime, sector=sector)
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
                    raise InvalidArgument(name, unknown_label(name, value, known))
                query = query.where(column == value)
            rows = connection.execute(query).all()
        return summarise(
            OutcomeTally(
                r.regime,
                r.sector,
                r.decision,
                r.count,  # type: ignore[arg-type]
                r.total,
                r.total_squares,
                r.positives,
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
        """Brings the index up to date with the database (call with the lock held): drops the
        episodes evicted since, then appends those stored since (see memory.index)."""
        index = self._index
        with self.engine.connect() as connection:
            version = connection.execute(sa.select(STATE.c.version)).scalar_one()
            if version == self._version:
                return
            oldest = connection.execute(sa.select(sa.func.min(EPISODES.c.seq))).scalar()
            index.drop_before(oldest if oldest is not None else index.last_seq + 1)
            rows = connection.execute(
                sa.select(EPISODES.c.seq, EPISODES.c.regime, EPISODES.c.sector, EPISODES.c.features)
                .where(EPISODES.c.seq > index.last_seq)
                .order_by(EPISODES.c.seq)
            ).all()
        index.append([(r.seq, r.regime, r.sector, json.loads(r.features)) for r in rows])
        self._version = version


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
