"""Loading and saving bars as CSV or Parquet in the documented long format.

One row per bar, any number of symbols, columns (extra columns are ignored):

=========  ============================================================================
timestamp  bar start, ISO 8601 (``2026-01-05T09:30:00Z``; no offset means UTC) in CSV,
           a timestamp column in Parquet
symbol     1-32 letters, digits, ``.``, ``_``, ``-`` or ``/``
sector     sector the symbol belongs to, e.g. Tech, Energy, Crypto, Financials; the
           same on every row of a symbol
open       positive price
high       positive, at least max(open, close)
low        positive, at most min(open, close)
close      positive price
volume     non-negative
=========  ============================================================================

Rows of one symbol must be in strictly increasing time; symbols may interleave. Every problem
is reported with the file, line (CSV) or row (Parquet) and column.

The common single-symbol shape is read too: ``Date,Open,High,Low,Close,Volume`` as most data
vendors and backtesting libraries write it. Column names match in any case; the time column may
be called ``timestamp``, ``date``, ``datetime`` or ``time`` (a date alone is midnight UTC), or
be an unnamed first column, as pandas writes a data frame's index;
without a ``symbol`` column the file holds one symbol, named after the file (``GOOG.csv`` is
GOOG); without a ``sector`` column it is ``DEFAULT_SECTOR``; without ``volume`` every bar's is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from qtmesh.base.bars import BarSeries, make_series, validate_bars, validate_sector, validate_symbol
from qtmesh.base.errors import InvalidArgument

REQUIRED = ("timestamp", "symbol", "sector", "open", "high", "low", "close", "volume")
_NUMERIC = ("open", "high", "low", "close", "volume")
# The names a column may have in a file (compared in lower case), by the name it is read as.
_ALIASES = {"timestamp": ("timestamp", "date", "datetime", "time")}
# The sector of a file's symbols when it has no sector column.
DEFAULT_SECTOR = "Unclassified"


def load_bars(path: Path) -> list[BarSeries]:
    """Reads and validates a CSV or Parquet file; errors name the file, row and column."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise InvalidArgument(str(path), "expected a .csv or .parquet file")
    if not path.is_file():
        raise InvalidArgument(str(path), "no such file")
    is_csv = suffix == ".csv"
    try:
        table = _read_csv(path) if is_csv else _canonical(pq.read_table(path), path.name)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InvalidArgument(path.name, f"cannot be read: {exc}") from None
    table = _single_symbol_defaults(table, path)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise InvalidArgument(path.name, f"missing column(s) {', '.join(missing)}")

    def row_name(i: int) -> str:
        return f"{path.name} line {i + 2}" if is_csv else f"{path.name} row {i + 1}"

    times = _times(table.column("timestamp"), path.name)
    columns = {c: _numbers(table.column(c), f"{path.name} column {c}") for c in _NUMERIC}
    symbols = np.asarray(table.column("symbol").to_pylist(), dtype=object)
    sectors = np.asarray(table.column("sector").to_pylist(), dtype=object)
    if len(symbols) == 0:
        raise InvalidArgument(path.name, "contains no bars")
    for name, values in (("symbol", symbols), ("sector", sectors)):
        empty = [i for i, v in enumerate(values) if not v]
        if empty:
            raise InvalidArgument(f"{row_name(empty[0])} ({name})", "is empty")

    result = []
    unique, first_rows = np.unique(symbols.astype(str), return_index=True)
    for symbol in unique[np.argsort(first_rows)]:
        rows = np.flatnonzero(symbols == symbol)
        validate_symbol(symbol, field=f"{row_name(rows[0])} (symbol)")
        sector = sectors[rows[0]]
        other = rows[sectors[rows] != sector]
        if other.size:
            raise InvalidArgument(
                f"{row_name(other[0])} (sector)",
                f"symbol {symbol} is in sector {sector!r} on {row_name(rows[0])} "
                f"but {sectors[other[0]]!r} here",
            )
        validate_sector(sector, field=f"{row_name(rows[0])} (sector)")
        series = make_series(
            symbol, sector, time=times[rows], **{c: columns[c][rows] for c in _NUMERIC}
        )

        def where(column: str, index: int | None, rows: np.ndarray = rows) -> str:
            if index is None:
                return f"{path.name} column {column}"
            label = "timestamp" if column == "time" else column
            return f"{row_name(int(rows[index]))} ({label})"

        validate_bars(series, where)
        result.append(series)
    return result


def save_bars(series: Sequence[BarSeries], path: Path) -> None:
    """Writes bars in the documented format; ``.csv`` or ``.parquet`` by the file suffix."""
    table = pa.table(
        {
            "timestamp": pa.array(
                np.concatenate([s.time for s in series]), type=pa.timestamp("ns", tz="UTC")
            ),
            "symbol": np.concatenate([[s.symbol] * len(s) for s in series]),
            "sector": np.concatenate([[s.sector] * len(s) for s in series]),
            **{c: np.concatenate([getattr(s, c) for s in series]) for c in _NUMERIC},
        }
    )
    if path.suffix.lower() == ".csv":
        # ISO 8601 with nanoseconds keeps the round trip exact; repr-exact floats come from Arrow.
        table = table.set_column(
            0, "timestamp", pc.strftime(table.column("timestamp"), format="%Y-%m-%dT%H:%M:%SZ")
        )
        pcsv.write_csv(table, path)
    else:
        pq.write_table(table, path)


def _canonical_names(names: Sequence[str], file: str) -> list[str]:
    """Each column's name as it is read: lower case, aliases resolved; extra columns keep
    their own. An unnamed first column (a data frame's index, as pandas writes it) is the time
    when no column is named as one. Two columns that mean the same are refused."""
    by_alias = {a: name for name, aliases in _ALIASES.items() for a in aliases}
    known = {*REQUIRED, *by_alias}
    lowered_names = [n.strip().lower() for n in names]
    unnamed_time = (
        bool(names)
        and lowered_names[0] == ""
        and not any(by_alias.get(n) == "timestamp" for n in lowered_names)
    )
    out: list[str] = []
    seen: dict[str, str] = {}
    for index, original in enumerate(names):
        lowered = "timestamp" if index == 0 and unnamed_time else lowered_names[index]
        name = by_alias.get(lowered, lowered) if lowered in known else original
        if name in seen and name in REQUIRED:
            raise InvalidArgument(
                file, f"columns {seen[name]!r} and {original!r} are both read as {name!r}"
            )
        seen[name] = original
        out.append(name)
    return out


def _canonical(table: pa.Table, file: str) -> pa.Table:
    return table.rename_columns(_canonical_names(table.column_names, file))


def _single_symbol_defaults(table: pa.Table, path: Path) -> pa.Table:
    """The symbol (from the file's name), sector and volume a single-symbol file leaves out."""
    rows = table.num_rows
    if "symbol" not in table.column_names:
        symbol = path.stem
        validate_symbol(symbol, field=f"{path.name} (no symbol column: the file's name)")
        table = table.append_column("symbol", pa.array([symbol] * rows, pa.string()))
    if "sector" not in table.column_names:
        table = table.append_column("sector", pa.array([DEFAULT_SECTOR] * rows, pa.string()))
    if "volume" not in table.column_names:
        table = table.append_column("volume", pa.array(np.zeros(rows)))
    return table


def _read_csv(path: Path) -> pa.Table:
    with pcsv.open_csv(path) as reader:  # the header and first block only
        header = reader.schema.names
    names = _canonical_names(header, path.name)
    types = {"timestamp": pa.string(), "symbol": pa.string(), "sector": pa.string()}
    types.update({c: pa.float64() for c in _NUMERIC})
    table = pcsv.read_csv(
        path,
        convert_options=pcsv.ConvertOptions(
            column_types={o: types[n] for o, n in zip(header, names, strict=True) if n in types},
            strings_can_be_null=False,
        ),
    )
    return table.rename_columns(names)


def _times(column: pa.ChunkedArray, name: str) -> np.ndarray:
    if pa.types.is_timestamp(column.type):
        if column.type.tz is None:
            column = pc.assume_timezone(column, "UTC")
        return column.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy()
    try:
        parsed = column.cast(pa.timestamp("ns", tz="UTC"))
    except pa.ArrowInvalid:
        try:
            parsed = pc.assume_timezone(column.cast(pa.timestamp("ns")), "UTC")
        except pa.ArrowInvalid as exc:
            raise InvalidArgument(
                f"{name} column timestamp",
                f"cannot parse as ISO 8601 times: {exc}",
            ) from None
    return parsed.cast(pa.int64()).to_numpy()


def _numbers(column: pa.ChunkedArray, field: str) -> np.ndarray:
    if column.null_count:
        first = next(i for i, v in enumerate(column.to_pylist()) if v is None)
        raise InvalidArgument(field, f"is empty on data row {first + 1}")
    try:
        return column.cast(pa.float64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidArgument(field, f"is not numeric: {exc}") from None
