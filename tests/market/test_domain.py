"""The market domain without sockets: validation, the replay clock, the synthetic market, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.replay import Replay
from market.sources import DEFAULT_SECTOR, load_bars, save_bars
from market.synthetic import REGIMES, SyntheticMarketSpec, generate
from qtmesh.base.bars import BarSeries, make_series, validate_bars
from qtmesh.base.errors import InvalidArgument

MINUTE = 60 * 10**9
T0 = 1_767_571_200 * 10**9  # 2026-01-05T00:00:00Z


def series(
    symbol: str = "AAA", sector: str = "Tech", n: int = 10, start: int = T0, **columns
) -> BarSeries:
    close = np.linspace(100, 110, n)
    base = {
        "time": start + np.arange(n) * MINUTE,
        "open": close - 0.5,
        "high": close + 1,
        "low": close - 1,
        "close": close,
        "volume": np.full(n, 1000.0),
    }
    base.update(columns)
    return make_series(symbol, sector, **base)


def locate(column: str, index: int | None) -> str:
    return f"{column}[{index}]" if index is not None else column


@pytest.mark.parametrize(
    ("column", "index", "value", "field", "problem"),
    [
        ("close", 3, np.nan, "close[3]", "nan is not a finite number"),
        ("open", 2, np.inf, "open[2]", "inf is not a finite number"),
        ("low", 4, -1.0, "low[4]", "price -1.0 is not positive"),
        ("open", 0, 0.0, "open[0]", "price 0.0 is not positive"),
        ("high", 5, 50.0, "high[5]", "is below low"),
        ("volume", 1, -5.0, "volume[1]", "volume -5.0 is negative"),
    ],
)
def test_invalid_values_name_the_bar(column, index, value, field, problem):
    good = series()
    values = getattr(good, column).copy()
    values[index] = value
    with pytest.raises(InvalidArgument) as failure:
        validate_bars(series(**{column: values}), locate)
    assert failure.value.field == field
    assert problem in failure.value.problem


def test_unsorted_and_duplicated_timestamps_are_rejected():
    times = series().time.copy()
    times[6] = times[5]
    with pytest.raises(InvalidArgument, match="duplicated timestamp") as failure:
        validate_bars(series(time=times), locate)
    assert failure.value.field == "time[6]"
    times = series().time.copy()
    times[[3, 4]] = times[[4, 3]]
    with pytest.raises(InvalidArgument, match="must be sorted ascending") as failure:
        validate_bars(series(time=times), locate)
    assert failure.value.field == "time[4]"


def test_columns_of_unequal_length_are_rejected():
    with pytest.raises(InvalidArgument, match="has 9 values but time has 10"):
        validate_bars(series(volume=np.ones(9)), locate)


PRICE = st.one_of(st.floats(-10, 200), st.sampled_from([np.nan, np.inf]))


@given(st.lists(st.tuples(PRICE, PRICE, PRICE, PRICE), min_size=1, max_size=20))
def test_validation_accepts_exactly_the_consistent_bars(rows):
    o, h, low, c = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    candidate = series(n=len(rows), open=o, high=h, low=low, close=c, volume=np.ones(len(rows)))
    consistent = bool(
        np.all(np.isfinite([o, h, low, c]))
        and np.all(np.array([o, h, low, c]) > 0)
        and np.all(h >= np.maximum(o, c))
        and np.all(low <= np.minimum(o, c))
    )
    if consistent:
        validate_bars(candidate, locate)
    else:
        with pytest.raises(InvalidArgument):
            validate_bars(candidate, locate)


def test_replay_never_serves_bars_after_the_clock():
    replay = Replay([series(n=100)], start_position=40)
    assert replay.clock_time == T0 + 39 * MINUTE
    assert replay.window("AAA") == (0, 40)
    assert replay.window("AAA", lookback=10) == (30, 40)
    with pytest.raises(InvalidArgument) as failure:
        replay.window("AAA", end_time=T0 + 40 * MINUTE)
    assert failure.value.field == "end_time"
    assert "after the replay clock" in failure.value.problem
    with pytest.raises(InvalidArgument, match="41 bars requested but AAA has 40") as failure:
        replay.window("AAA", lookback=41)
    with pytest.raises(InvalidArgument) as failure:
        replay.window("ZZZ")
    assert failure.value.field == "symbol"
    assert "unknown symbol 'ZZZ'" in failure.value.problem
    with pytest.raises(InvalidArgument, match="after end_time"):
        replay.window("AAA", start_time=T0 + 20 * MINUTE, end_time=T0 + 10 * MINUTE)


def test_advance_moves_the_clock_and_stops_at_the_end():
    replay = Replay([series(n=100), series("BBB", start=T0 + 50 * MINUTE, n=100)], start_position=1)
    assert replay.length == 150
    result = replay.advance(59)
    assert (result.position, result.clock_time) == (60, T0 + 59 * MINUTE)
    assert result.revealed_bars == 59 + 10  # AAA bars 1..59, BBB bars 0..9
    assert [b.symbol for b in replay.bars_at(60)] == ["AAA", "BBB"]
    assert [b.symbol for b in replay.bars_at(60, ["BBB"])] == ["BBB"]
    with pytest.raises(InvalidArgument, match="90 remain") as failure:
        replay.advance(91)
    assert failure.value.field == "steps"
    with pytest.raises(InvalidArgument, match="at least 1"):
        replay.advance(0)
    assert replay.advance(90).at_end


def test_ingest_is_all_or_nothing_and_never_rewrites_the_past():
    replay = Replay([series(n=100)], start_position=100)
    later = series(start=T0 + 100 * MINUTE, n=5)
    bad = series("NEW", start=T0 + 100 * MINUTE, n=5, close=np.array([1, 2, np.nan, 4, 5.0]))
    with pytest.raises(InvalidArgument) as failure:
        replay.ingest([later, bad])
    assert failure.value.field == "series[1].close[2]"
    assert replay.length == 100
    assert replay.symbols == ["AAA"]

    with pytest.raises(InvalidArgument, match="the past is immutable") as failure:
        replay.ingest([series(start=T0 + 99 * MINUTE, n=3)])
    assert failure.value.field == "series[0].time_unix_nanos[0]"
    with pytest.raises(InvalidArgument, match="a sector name"):
        replay.ingest([series("NEW", sector="", start=T0 + 200 * MINUTE, n=3)])

    result = replay.ingest([later, series("NEW", sector="Energy", start=T0 + 102 * MINUTE, n=5)])
    assert result.bars_added == 10
    assert result.new_symbols == ("NEW",)
    assert replay.length == 107
    assert replay.position == 100
    replay.advance(7)
    assert replay.window("NEW") == (0, 5)


def test_synthetic_market_is_seeded_multi_sector_with_regimes_clustering_and_jumps():
    spec = SyntheticMarketSpec(seed=3, days=20)
    market = generate(spec)
    again = generate(spec)
    assert all(a.equals(b) for a, b in zip(market.series, again.series, strict=True))
    other = generate(SyntheticMarketSpec(seed=4, days=20))
    assert not market.series[0].equals(other.series[0])

    assert {s.sector for s in market.series} == {"Tech", "Energy", "Crypto", "Financials"}
    for s in market.series:
        validate_bars(s, locate)
        assert len(s) == 20 * 1440
    assert len(np.unique(market.regimes)) >= 2, "the regime chain must switch"
    assert np.count_nonzero(np.diff(market.regimes)) >= 2

    returns = np.diff(np.log(market.series[0].close))
    magnitude = np.abs(returns) - np.abs(returns).mean()
    autocorrelation = np.dot(magnitude[:-60], magnitude[60:]) / np.dot(magnitude, magnitude)
    assert autocorrelation > 0.05, "absolute returns an hour apart must correlate (clustering)"
    standardized = (returns - returns.mean()) / returns.std()
    assert np.mean(standardized**4) > 4, "jumps and regimes make returns fat-tailed"

    crisis = next(i for i, r in enumerate(REGIMES) if r.name == "crisis")
    if np.any(market.regimes[1:] == crisis):
        calm = np.std(returns[market.regimes[1:] == 0])
        stressed = np.std(returns[market.regimes[1:] == crisis])
        assert stressed > calm


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_round_trip_is_exact(tmp_path: Path, suffix: str):
    original = list(generate(SyntheticMarketSpec(seed=5, days=1)).series)
    path = tmp_path / f"bars{suffix}"
    save_bars(original, path)
    loaded = load_bars(path)
    assert [s.symbol for s in loaded] == [s.symbol for s in original]
    for a, b in zip(original, loaded, strict=True):
        assert a.equals(b)


def test_csv_errors_name_file_line_and_column(tmp_path: Path):
    header = "timestamp,symbol,sector,open,high,low,close,volume\n"
    rows = [
        "2026-01-05T00:00:00Z,AAA,Tech,100,101,99,100.5,10\n",
        "2026-01-05T00:01:00Z,BBB,Energy,50,51,49,50.5,10\n",
        "2026-01-05T00:01:00Z,AAA,Tech,100,99,101,100.5,10\n",
    ]
    path = tmp_path / "bad.csv"
    path.write_text(header + "".join(rows))
    with pytest.raises(InvalidArgument) as failure:
        load_bars(path)
    assert failure.value.field == "bad.csv line 4 (high)"
    assert "below low" in failure.value.problem

    path.write_text(header + rows[0] + rows[1] + rows[0].replace("AAA,Tech", "AAA,Crypto"))
    with pytest.raises(InvalidArgument, match="in sector 'Tech'") as failure:
        load_bars(path)
    assert failure.value.field == "bad.csv line 4 (sector)"

    path.write_text(header + rows[0] + rows[0])
    with pytest.raises(InvalidArgument, match="duplicated timestamp") as failure:
        load_bars(path)
    assert failure.value.field == "bad.csv line 3 (timestamp)"

    path.write_text(header.replace(",close", "") + "2026-01-05T00:00:00Z,AAA,Tech,1,1,1,1\n")
    with pytest.raises(InvalidArgument, match=r"missing column\(s\) close"):
        load_bars(path)

    path.write_text(header + "yesterday,AAA,Tech,1,1,1,1,1\n")
    with pytest.raises(InvalidArgument, match="ISO 8601"):
        load_bars(path)


def test_csv_times_without_offset_are_utc_and_parquet_may_be_naive(tmp_path: Path):
    path = tmp_path / "naive.csv"
    path.write_text(
        "timestamp,symbol,sector,open,high,low,close,volume\n"
        "2026-01-05 00:00:00,AAA,Tech,1,1,1,1,1\n"
        "2026-01-05 00:01:00,AAA,Tech,1,1,1,1,1\n"
    )
    assert load_bars(path)[0].time[0] == T0
    table = pa.table(
        {
            "timestamp": pa.array([T0, T0 + MINUTE], type=pa.timestamp("ns")),
            "symbol": ["AAA", "AAA"],
            "sector": ["Tech", "Tech"],
            **{c: [1.0, 1.0] for c in ("open", "high", "low", "close", "volume")},
        }
    )
    pq.write_table(table, tmp_path / "naive.parquet")
    assert load_bars(tmp_path / "naive.parquet")[0].time[1] == T0 + MINUTE


def test_a_single_symbol_file_in_the_common_shape_is_read(tmp_path: Path):
    # As data vendors write it: any case, a date column, an extra column, no symbol or sector.
    path = tmp_path / "GOOG.csv"
    path.write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2004-08-19,100.0,104.0,95.9,100.3,50.1,44659000\n"
        "2004-08-20,101.0,109.1,100.5,108.3,54.1,22834300\n"
        "2004-08-23,110.8,113.5,109.1,109.4,54.6,18256100\n"
    )
    (series,) = load_bars(path)
    assert (series.symbol, series.sector) == ("GOOG", DEFAULT_SECTOR)
    day = 86_400 * 10**9
    assert series.time[0] == np.datetime64("2004-08-19", "ns").astype(np.int64)
    assert list(np.diff(series.time)) == [day, 3 * day]
    assert list(series.close) == [100.3, 108.3, 109.4]
    assert list(series.volume) == [44659000, 22834300, 18256100]

    # Hourly FX without volume, as Parquet with a naive "datetime" column.
    table = pa.table(
        {
            "datetime": pa.array([T0, T0 + 60 * MINUTE], type=pa.timestamp("ns")),
            **{c: [1.1, 1.2] for c in ("OPEN", "HIGH", "LOW", "CLOSE")},
        }
    )
    pq.write_table(table, tmp_path / "EURUSD.parquet")
    (fx,) = load_bars(tmp_path / "EURUSD.parquet")
    assert fx.symbol == "EURUSD"
    assert list(fx.time) == [T0, T0 + 60 * MINUTE]
    assert list(fx.volume) == [0.0, 0.0]


def test_an_unnamed_first_column_is_the_time_as_pandas_writes_an_index(tmp_path: Path):
    path = tmp_path / "EURUSD.csv"
    path.write_text(
        ",Open,High,Low,Close,Volume\n"
        "2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n"
        "2017-04-19 10:00:00,1.07214,1.07296,1.07214,1.0726,1241\n"
    )
    (series,) = load_bars(path)
    assert series.symbol == "EURUSD"
    assert list(np.diff(series.time)) == [3600 * 10**9]
    # Where a column is named as the time, an unnamed first one is only an extra column.
    path.write_text(",date,open,high,low,close\n0,2020-01-02,10,11,9,10\n")
    assert load_bars(path)[0].time[0] == np.datetime64("2020-01-02", "ns").astype(np.int64)


def test_a_single_symbol_files_errors_name_its_line_and_column(tmp_path: Path):
    path = tmp_path / "SPY.csv"
    path.write_text("date,open,high,low,close\n2020-01-02,10,11,9,10\n2020-01-03,10,9,11,10\n")
    with pytest.raises(InvalidArgument, match="below low") as failure:
        load_bars(path)
    assert failure.value.field == "SPY.csv line 3 (high)"
    path.write_text("Date,Timestamp,open,high,low,close\n")
    with pytest.raises(InvalidArgument, match="both read as 'timestamp'"):
        load_bars(path)
    bad_name = tmp_path / "my data.csv"
    bad_name.write_text("date,open,high,low,close\n2020-01-02,10,11,9,10\n")
    with pytest.raises(InvalidArgument, match="no symbol column"):
        load_bars(bad_name)
