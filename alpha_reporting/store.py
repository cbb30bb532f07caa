"""Persistence of encrypted reports on SQLite or PostgreSQL. Reports are only ever inserted:
at most one per report id and one per (sector, trading date), and each gets a sequence number
that increases in the order reports are stored (PostgreSQL may skip numbers), the order
WatchReports replays. One service process writes; its book serialises the writes. Methods
block; async callers go through :meth:`SqlStore.run`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from alpha_reporting.report import EncryptedReport
from qtmesh.base.storage import Migrations, SqlStore, create_engine

metadata = sa.MetaData()

reports = sa.Table(
    "alpha_reports",
    metadata,
    # SQLite only autoincrements an INTEGER primary key.
    sa.Column(
        "sequence",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("report_id", sa.Text, nullable=False, unique=True),
    sa.Column("sector", sa.Text, nullable=False),
    sa.Column("trading_date", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("nonce", sa.LargeBinary, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("sector", "trading_date", name="alpha_reports_one_per_day"),
    sa.Index("alpha_reports_by_date", "trading_date", "sector"),
)


def _report(row: Any) -> EncryptedReport:
    return EncryptedReport(
        report_id=row.report_id,
        sector=row.sector,
        trading_date=row.trading_date,
        key_id=row.key_id,
        nonce=bytes(row.nonce),
        ciphertext=bytes(row.ciphertext),
        create_time=row.create_time,
        sequence=row.sequence,
    )


# The schema's revisions (qtmesh.base.storage.Migrations).
MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "alpha_reporting_alembic_version")


class ReportStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(create_engine(url), MIGRATIONS)

    def insert(self, report: EncryptedReport) -> EncryptedReport | None:
        """Stores ``report``; None (and nothing stored) if its id or its (sector, date) exists."""
        try:
            with self.engine.begin() as c:
                sequence = c.execute(
                    reports.insert()
                    .values(
                        report_id=report.report_id,
                        sector=report.sector,
                        trading_date=report.trading_date,
                        key_id=report.key_id,
                        nonce=report.nonce,
                        ciphertext=report.ciphertext,
                        create_time=report.create_time,
                    )
                    .returning(reports.c.sequence)
                ).scalar_one()
        except sa.exc.IntegrityError:
            return None
        return dataclasses.replace(report, sequence=sequence)

    def get(self, report_id: str) -> EncryptedReport | None:
        with self.engine.connect() as c:
            row = c.execute(reports.select().where(reports.c.report_id == report_id)).first()
        return _report(row) if row is not None else None

    def of_day(self, sector: str, trading_date: str) -> EncryptedReport | None:
        with self.engine.connect() as c:
            row = c.execute(
                reports.select().where(
                    reports.c.sector == sector, reports.c.trading_date == trading_date
                )
            ).first()
        return _report(row) if row is not None else None

    def page(
        self,
        *,
        sector: str = "",
        start_date: str = "",
        end_date: str = "",
        after: tuple[str, str] | None = None,
        limit: int,
    ) -> list[EncryptedReport]:
        """Reports ordered by (trading date, sector), after the keyset ``after``."""
        query = reports.select()
        if sector:
            query = query.where(reports.c.sector == sector)
        if start_date:
            query = query.where(reports.c.trading_date >= start_date)
        if end_date:
            query = query.where(reports.c.trading_date <= end_date)
        if after is not None:
            date, after_sector = after
            query = query.where(
                sa.or_(
                    reports.c.trading_date > date,
                    sa.and_(reports.c.trading_date == date, reports.c.sector > after_sector),
                )
            )
        query = query.order_by(reports.c.trading_date, reports.c.sector).limit(limit)
        with self.engine.connect() as c:
            return [_report(row) for row in c.execute(query)]

    def after_sequence(self, sequence: int, limit: int) -> list[EncryptedReport]:
        query = (
            reports.select()
            .where(reports.c.sequence > sequence)
            .order_by(reports.c.sequence)
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [_report(row) for row in c.execute(query)]

    def last_sequence(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.max(reports.c.sequence))).scalar() or 0)

    def reported(self, dates: Sequence[str]) -> set[tuple[str, str]]:
        """The (sector, trading date) pairs already reported among ``dates``."""
        if not dates:
            return set()
        query = sa.select(reports.c.sector, reports.c.trading_date).where(
            reports.c.trading_date.in_(list(dates))
        )
        with self.engine.connect() as c:
            return {(row.sector, row.trading_date) for row in c.execute(query)}
