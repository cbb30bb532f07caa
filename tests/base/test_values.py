"""The shared checks of incoming scalar values: times, durations, numbers and sizes."""

from __future__ import annotations

import math

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from qtmesh.api.market.v1 import market_pb2
from qtmesh.base.convert import (
    EARLIEST_TIME,
    LATEST_TIME,
    bounded,
    duration_nanos_from_proto,
    finite,
    optional_time_from_proto,
    seconds_from_proto,
    time_from_proto,
    timestamp,
)
from qtmesh.base.errors import InvalidArgument


def test_every_time_an_int64_of_nanoseconds_holds_round_trips():
    for nanos in (EARLIEST_TIME, -1, 0, 1, 1_700_000_000_123_456_789, LATEST_TIME):
        assert time_from_proto(timestamp(nanos), field="t") == nanos


@pytest.mark.parametrize(
    ("seconds", "nanos", "field"),
    [
        (253_402_300_799, 0, "window.end_time"),  # 9999-12-31: valid protobuf, beyond int64 ns
        (-62_135_596_800, 0, "window.end_time"),  # year 1
        (LATEST_TIME // 10**9, 999_999_999, "window.end_time"),  # one past the last
        (0, 1_000_000_000, "window.end_time.nanos"),
        (0, -1, "window.end_time.nanos"),
    ],
)
def test_a_time_outside_the_range_names_its_field(seconds, nanos, field):
    with pytest.raises(InvalidArgument) as bad:
        time_from_proto(Timestamp(seconds=seconds, nanos=nanos), field="window.end_time")
    assert bad.value.field == field


def test_an_unset_time_is_none_and_a_set_one_is_checked():
    request = market_pb2.GetFleetRequest()
    assert optional_time_from_proto(request, "end_time") is None
    request.end_time.seconds = 10**12
    with pytest.raises(InvalidArgument) as bad:
        optional_time_from_proto(request, "end_time")
    assert bad.value.field == "end_time"


def test_durations_agree_in_sign_and_fit_an_int64_of_nanoseconds():
    assert seconds_from_proto(Duration(seconds=-1, nanos=-500_000_000), field="d") == -1.5
    assert duration_nanos_from_proto(Duration(seconds=2, nanos=5), field="d") == 2_000_000_005
    for seconds, nanos in ((1, -1), (-1, 1), (0, 10**9), (10**11, 0)):
        with pytest.raises(InvalidArgument) as bad:
            seconds_from_proto(Duration(seconds=seconds, nanos=nanos), field="latency")
        assert bad.value.field.startswith("latency")


def test_numbers_are_finite_and_within_their_bounds():
    assert finite(0.5, field="x", minimum=0, maximum=1) == 0.5
    for value in (math.nan, math.inf, -math.inf, -0.1, 1.1):
        with pytest.raises(InvalidArgument) as bad:
            finite(value, field="weight", minimum=0, maximum=1)
        assert bad.value.field == "weight"


def test_sizes_are_bounded():
    bounded("abc", field="name", at_most=3)
    with pytest.raises(InvalidArgument, match="holds 4, more than the 3 allowed"):
        bounded([1, 2, 3, 4], field="symbols", at_most=3)
