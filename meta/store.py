"""Persistence of the meta layer on SQLite or PostgreSQL: parameter versions with their changes
and causes, the rolling window of trades, the evaluations seen, and the SESA trial log.

Parameter versions are append-only: the current parameters are the highest version, and the
history is what WatchParameters replays. Each write is one transaction, so a request either
leaves all its traces or none. Methods block; async callers go through :meth:`SqlStore.run`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from meta.learning import Tracked
from meta.model import Evaluation, MetaParameters, MutationSetting, ParameterChange, Trade
from meta.tuning import Score, Trial
from qtmesh.base.genome import StrategyFamily, StrategyStage
from qtmesh.base.storage import Migrations, SqlStore, create_engine

metadata = sa.MetaData()

versions = sa.Table(
    "meta_parameter_versions",
    metadata,
    sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("update_time", sa.BigInteger, nullable=False),
    sa.Column("cause", sa.Text, nullable=False),
    # The idempotency key of the action that made this version, so a replayed action is
    # recognised even after a restart.
    sa.Column("action_key", sa.Text, nullable=True, unique=True),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("changes", sa.JSON, nullable=False),
    sa.Column("tracked", sa.JSON, nullable=False),
)

trades = sa.Table(
    "meta_trades",
    metadata,
    sa.Column("strategy_id", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("entry_time", sa.BigInteger, primary_key=True),
    sa.Column("exit_time", sa.BigInteger, primary_key=True),
    sa.Column("sector", sa.Text, nullable=False),
    sa.Column("return_fraction", sa.Double, nullable=False),
    sa.Index("meta_trades_by_exit", "exit_time"),
)

evaluations = sa.Table(
    "meta_evaluations",
    metadata,
    sa.Column("strategy_id", sa.Text, primary_key=True),
    sa.Column("evaluated_time", sa.BigInteger, primary_key=True),
    sa.Column("family", sa.Text, nullable=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("composite_score", sa.Double, nullable=False),
    sa.Column("sharpe_ratio", sa.Double, nullable=False),
    sa.Column("deflated_sharpe_ratio", sa.Double, nullable=True),
    sa.Column("trade_count", sa.BigInteger, nullable=False),
    sa.Column("stage", sa.Text, nullable=True),
    sa.Index("meta_evaluations_by_stage", "stage", "strategy_id"),
)

trials = sa.Table(
    "meta_sesa_trials",
    metadata,
    sa.Column("trial_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("rate", sa.Double, nullable=False),
    sa.Column("magnitude", sa.Double, nullable=False),
    sa.Column("start_time", sa.BigInteger, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

# Every offspring genome credited to a trial, once: the trial log's detail.
credits = sa.Table(
    "meta_sesa_credits",
    metadata,
    sa.Column("strategy_id", sa.Text, primary_key=True),
    sa.Column(
        "trial_index", sa.BigInteger, sa.ForeignKey("meta_sesa_trials.trial_index"), nullable=False
    ),
    sa.Column("score", sa.Double, nullable=False),
    sa.Column("evaluated_time", sa.BigInteger, nullable=False),
    sa.Index("meta_sesa_credits_by_time", "evaluated_time"),
)

# The families of strategies whose trades named one (the paper fleet's do): the model weights
# read them when no evaluation of the strategy gave a family.
trade_families = sa.Table(
    "meta_trade_families",
    metadata,
    sa.Column("strategy_id", sa.Text, primary_key=True),
    sa.Column("family", sa.Text, nullable=False),
)

# Where each followed stream of trades stands (the paper fleet's: the last trade counted, by
# exit time and strategy id), written with the trades it counted.
stream_cursors = sa.Table(
    "meta_stream_cursors",
    metadata,
    sa.Column("stream", sa.Text, primary_key=True),
    sa.Column("exit_time", sa.BigInteger, nullable=False),
    sa.Column("strategy_id", sa.Text, nullable=False),
)

# Where each followed stream of numbered events stands (SESA's evolutions: the last event
# counted, and the sequence to read on from), written with what it counted.
sequence_cursors = sa.Table(
    "meta_sequence_cursors",
    metadata,
    sa.Column("stream", sa.Text, primary_key=True),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("resume_after", sa.BigInteger, nullable=False),
)

_CHUNK = 500


@dataclasses.dataclass(frozen=True)
class StreamCursor:
    """The last trade of a followed stream that was counted."""

    stream: str
    exit_time: int
    strategy_id: str


@dataclasses.dataclass(frozen=True)
class SequenceCursor:
    """Where a followed stream of numbered events stands: ``sequence`` is the last event
    counted; a reader resumes after ``resume_after`` (at most ``sequence``: earlier when events
    before it are still needed, such as the start of an evolution that had not ended)."""

    stream: str
    sequence: int
    resume_after: int


@dataclasses.dataclass(frozen=True)
class VersionRecord:
    parameters: MetaParameters
    changes: tuple[ParameterChange, ...]
    tracked: Tracked
    action_key: str | None = None

    @property
    def version(self) -> int:
        return self.parameters.version


@dataclasses.dataclass(frozen=True)
class Credit:
    strategy_id: str
    trial_index: int
    score: float
    evaluated_time: int


@dataclasses.dataclass(frozen=True)
class Write:
    """Everything one request stores, written in one transaction."""

    trades: Sequence[Trade] = ()
    evaluations: Sequence[Evaluation] = ()
    credits: Sequence[Credit] = ()
    version: VersionRecord | None = None
    trial: Trial | None = None
    prune_trades_before: int | None = None
    # The followed stream's position after ``trades`` (or after ``evaluations``).
    cursor: StreamCursor | SequenceCursor | None = None


@dataclasses.dataclass(frozen=True)
class StoredContext:
    """What an update or a decision needs from the store, read in one go."""

    window_trades: list[Trade]
    existing_trade_keys: set[tuple[str, str, int, int]]
    existing_evaluation_keys: set[tuple[str, int]]
    families: dict[str, str]
    trials: list[Trial]
    credited: set[str]
    recent_scores: list[Score]
    last_offspring_time: int | None
    shadow_latest: dict[str, Evaluation]
    first_shadow_time: dict[str, int]


def _record(row: Any) -> VersionRecord:
    parameters = MetaParameters.from_json(
        row.parameters, version=row.version, update_time=row.update_time, cause=row.cause
    )
    return VersionRecord(
        parameters=parameters,
        changes=tuple(ParameterChange(**c) for c in row.changes),
        tracked=Tracked(**row.tracked),
        action_key=row.action_key,
    )


def _evaluation(row: Any) -> Evaluation:
    return Evaluation(
        strategy_id=row.strategy_id,
        family=StrategyFamily[row.family] if row.family else None,
        generation=row.generation,
        composite_score=row.composite_score,
        sharpe_ratio=row.sharpe_ratio,
        deflated_sharpe_ratio=row.deflated_sharpe_ratio,
        trade_count=row.trade_count,
        stage=StrategyStage[row.stage] if row.stage else None,
        evaluated_time=row.evaluated_time,
    )


def _chunks(values: Iterable[str]) -> Iterable[list[str]]:
    items = sorted(set(values))
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


# The schema's revisions (qtmesh.base.storage.Migrations).
MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "meta_alembic_version")


class MetaStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(create_engine(url), MIGRATIONS)

    def _insert_ignoring_duplicates(self, table: sa.Table) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    # -- parameter versions -------------------------------------------------------------------

    def latest(self) -> VersionRecord | None:
        with self.engine.connect() as c:
            row = c.execute(versions.select().order_by(versions.c.version.desc()).limit(1)).first()
        return _record(row) if row is not None else None

    def history(self, after_version: int, limit: int) -> list[VersionRecord]:
        query = (
            versions.select()
            .where(versions.c.version > after_version)
            .order_by(versions.c.version)
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [_record(row) for row in c.execute(query)]

    def version_of_action(self, key: str) -> VersionRecord | None:
        with self.engine.connect() as c:
            row = c.execute(versions.select().where(versions.c.action_key == key)).first()
        return _record(row) if row is not None else None

    def stream_cursor(self, stream: str) -> StreamCursor | None:
        with self.engine.connect() as c:
            row = c.execute(
                stream_cursors.select().where(stream_cursors.c.stream == stream)
            ).first()
        return StreamCursor(stream, row.exit_time, row.strategy_id) if row is not None else None

    def sequence_cursor(self, stream: str) -> SequenceCursor | None:
        with self.engine.connect() as c:
            row = c.execute(
                sequence_cursors.select().where(sequence_cursors.c.stream == stream)
            ).first()
        return SequenceCursor(stream, row.sequence, row.resume_after) if row is not None else None

    # -- the trial log --------------------------------------------------------------------------

    def trials(self, *, offset: int = 0, limit: int | None = None) -> list[Trial]:
        counted = (
            sa.select(
                credits.c.trial_index,
                sa.func.count().label("n"),
                sa.func.sum(credits.c.score).label("total"),
            )
            .group_by(credits.c.trial_index)
            .subquery()
        )
        query = (
            sa.select(trials, counted.c.n, counted.c.total)
            .select_from(trials.outerjoin(counted, counted.c.trial_index == trials.c.trial_index))
            .order_by(trials.c.trial_index)
            .offset(offset)
        )
        # A trial ends where the next one starts.
        following = {}
        with self.engine.connect() as c:
            rows = list(c.execute(query.limit(limit) if limit is not None else query))
            if rows:
                last = rows[-1].trial_index
                nxt = c.execute(
                    sa.select(trials.c.start_time).where(trials.c.trial_index == last + 1)
                ).scalar()
                following[last] = nxt
        starts = {r.trial_index: r.start_time for r in rows}
        return [
            Trial(
                index=r.trial_index,
                setting=MutationSetting(r.rate, r.magnitude),
                start_time=r.start_time,
                end_time=starts.get(r.trial_index + 1, following.get(r.trial_index)),
                evaluation_count=r.n or 0,
                score_sum=float(r.total or 0.0),
            )
            for r in rows
        ]

    def trial_totals(self) -> tuple[int, int]:
        with self.engine.connect() as c:
            count = c.execute(sa.select(sa.func.count()).select_from(trials)).scalar_one()
            genomes = c.execute(sa.select(sa.func.count()).select_from(credits)).scalar_one()
        return int(count), int(genomes)

    # -- reads for an update or a decision -----------------------------------------------------

    def read_context(
        self,
        *,
        window_start: int,
        now: int,
        scores_since: int,
        incoming_trades: Sequence[Trade] = (),
        incoming_evaluations: Sequence[Evaluation] = (),
    ) -> StoredContext:
        with self.engine.connect() as c:
            window = [
                Trade(
                    strategy_id=r.strategy_id,
                    symbol=r.symbol,
                    sector=r.sector,
                    entry_time=r.entry_time,
                    exit_time=r.exit_time,
                    return_fraction=r.return_fraction,
                )
                for r in c.execute(
                    trades.select().where(
                        trades.c.exit_time > window_start, trades.c.exit_time <= now
                    )
                )
            ]
            existing_trades: set[tuple[str, str, int, int]] = set()
            if incoming_trades:
                low = min(t.exit_time for t in incoming_trades)
                high = max(t.exit_time for t in incoming_trades)
                existing_trades = {
                    (r.strategy_id, r.symbol, r.entry_time, r.exit_time)
                    for r in c.execute(
                        sa.select(
                            trades.c.strategy_id,
                            trades.c.symbol,
                            trades.c.entry_time,
                            trades.c.exit_time,
                        ).where(trades.c.exit_time.between(low, high))
                    )
                }
            ids = {t.strategy_id for t in window} | {t.strategy_id for t in incoming_trades}
            incoming_ids = {e.strategy_id for e in incoming_evaluations}
            families: dict[str, str] = {}
            existing_evaluations: set[tuple[str, int]] = set()
            credited: set[str] = set()
            first_shadow: dict[str, int] = {}
            for chunk in _chunks(ids):
                query = (
                    sa.select(evaluations.c.strategy_id, evaluations.c.family)
                    .where(evaluations.c.strategy_id.in_(chunk), evaluations.c.family.is_not(None))
                    .order_by(evaluations.c.evaluated_time)
                )
                named = sa.select(trade_families).where(trade_families.c.strategy_id.in_(chunk))
                families |= {r.strategy_id: r.family for r in c.execute(named)}
                families |= {r.strategy_id: r.family for r in c.execute(query)}
            for chunk in _chunks(incoming_ids):
                existing_evaluations |= {
                    (r.strategy_id, r.evaluated_time)
                    for r in c.execute(
                        sa.select(evaluations.c.strategy_id, evaluations.c.evaluated_time).where(
                            evaluations.c.strategy_id.in_(chunk)
                        )
                    )
                }
                credited |= set(
                    c.execute(
                        sa.select(credits.c.strategy_id).where(credits.c.strategy_id.in_(chunk))
                    ).scalars()
                )
            # Strategies whose latest evaluation put them in shadow test.
            newest = (
                sa.select(
                    evaluations.c.strategy_id,
                    sa.func.max(evaluations.c.evaluated_time).label("newest_time"),
                )
                .group_by(evaluations.c.strategy_id)
                .subquery()
            )
            shadow_latest = {
                r.strategy_id: _evaluation(r)
                for r in c.execute(
                    evaluations.select()
                    .join(
                        newest,
                        sa.and_(
                            newest.c.strategy_id == evaluations.c.strategy_id,
                            newest.c.newest_time == evaluations.c.evaluated_time,
                        ),
                    )
                    .where(evaluations.c.stage == StrategyStage.SHADOW.name)
                )
            }
            for chunk in _chunks(set(shadow_latest) | incoming_ids):
                first_shadow |= {
                    r.strategy_id: r.first_time
                    for r in c.execute(
                        sa.select(
                            evaluations.c.strategy_id,
                            sa.func.min(evaluations.c.evaluated_time).label("first_time"),
                        )
                        .where(
                            evaluations.c.strategy_id.in_(chunk),
                            evaluations.c.stage == StrategyStage.SHADOW.name,
                        )
                        .group_by(evaluations.c.strategy_id)
                    )
                }
            last_offspring = c.execute(
                sa.select(sa.func.max(evaluations.c.evaluated_time)).where(
                    evaluations.c.generation >= 1
                )
            ).scalar()
            setting_of = {
                r.trial_index: MutationSetting(r.rate, r.magnitude)
                for r in c.execute(
                    sa.select(trials.c.trial_index, trials.c.rate, trials.c.magnitude)
                )
            }
            scores = [
                Score(setting_of[r.trial_index], r.score, r.evaluated_time)
                for r in c.execute(
                    sa.select(credits.c.trial_index, credits.c.score, credits.c.evaluated_time)
                    .where(credits.c.evaluated_time > scores_since)
                    .order_by(credits.c.evaluated_time, credits.c.strategy_id)
                )
            ]
        return StoredContext(
            window_trades=window,
            existing_trade_keys=existing_trades,
            existing_evaluation_keys=existing_evaluations,
            families=families,
            trials=self.trials(),
            credited=credited,
            recent_scores=scores,
            last_offspring_time=last_offspring,
            shadow_latest=shadow_latest,
            first_shadow_time=first_shadow,
        )

    # -- the one write --------------------------------------------------------------------------

    def write(self, w: Write) -> None:
        with self.engine.begin() as c:
            if w.trades:
                c.execute(
                    self._insert_ignoring_duplicates(trades),
                    [
                        {
                            "strategy_id": t.strategy_id,
                            "symbol": t.symbol,
                            "entry_time": t.entry_time,
                            "exit_time": t.exit_time,
                            "sector": t.sector,
                            "return_fraction": t.return_fraction,
                        }
                        for t in w.trades
                    ],
                )
                named = {t.strategy_id: t.family.name for t in w.trades if t.family is not None}
                if named:
                    c.execute(
                        self._insert_ignoring_duplicates(trade_families),
                        [{"strategy_id": k, "family": v} for k, v in sorted(named.items())],
                    )
            if isinstance(w.cursor, StreamCursor):
                cursor = w.cursor
                c.execute(stream_cursors.delete().where(stream_cursors.c.stream == cursor.stream))
                c.execute(
                    stream_cursors.insert().values(
                        stream=cursor.stream,
                        exit_time=cursor.exit_time,
                        strategy_id=cursor.strategy_id,
                    )
                )
            elif isinstance(w.cursor, SequenceCursor):
                at = w.cursor
                c.execute(sequence_cursors.delete().where(sequence_cursors.c.stream == at.stream))
                c.execute(
                    sequence_cursors.insert().values(
                        stream=at.stream, sequence=at.sequence, resume_after=at.resume_after
                    )
                )
            if w.evaluations:
                c.execute(
                    self._insert_ignoring_duplicates(evaluations),
                    [
                        {
                            "strategy_id": e.strategy_id,
                            "evaluated_time": e.evaluated_time,
                            "family": e.family.name if e.family else None,
                            "generation": e.generation,
                            "composite_score": e.composite_score,
                            "sharpe_ratio": e.sharpe_ratio,
                            "deflated_sharpe_ratio": e.deflated_sharpe_ratio,
                            "trade_count": e.trade_count,
                            "stage": e.stage.name if e.stage else None,
                        }
                        for e in w.evaluations
                    ],
                )
            if w.trial is not None:
                c.execute(
                    trials.insert().values(
                        trial_index=w.trial.index,
                        rate=w.trial.setting.rate,
                        magnitude=w.trial.setting.magnitude,
                        start_time=w.trial.start_time,
                        version=w.version.version if w.version else 0,
                    )
                )
            if w.credits:
                c.execute(
                    self._insert_ignoring_duplicates(credits),
                    [dataclasses.asdict(credit) for credit in w.credits],
                )
            if w.version is not None:
                p = w.version.parameters
                c.execute(
                    versions.insert().values(
                        version=p.version,
                        update_time=p.update_time,
                        cause=p.cause,
                        action_key=w.version.action_key,
                        parameters=p.to_json(),
                        changes=[dataclasses.asdict(change) for change in w.version.changes],
                        tracked=w.version.tracked.to_json(),
                    )
                )
            if w.prune_trades_before is not None:
                c.execute(trades.delete().where(trades.c.exit_time <= w.prune_trades_before))
