"""Small protobuf conversions every adapter needs: timestamps, durations, enums by name, and the
checks of scalar values every converter shares.

Rules of the incoming side (``*_from_proto`` and the checks): a value that passes is one the
domain and every store can hold, so nothing later overflows or answers INTERNAL; one that does
not raises :class:`~qtmesh.base.errors.InvalidArgument` naming the field.

- A time is int64 Unix nanoseconds everywhere in the mesh, in memory and in every store column.
  A Timestamp is valid when its ``nanos`` is a fraction of a second (0..999,999,999, as
  ``google.protobuf.Timestamp`` defines) and the instant fits an int64 of nanoseconds:
  1677-09-21T00:12:43Z to 2262-04-11T23:47:16Z.
- A Duration is valid when ``seconds`` and ``nanos`` agree in sign, ``|nanos|`` is below a second
  and the span fits an int64 of nanoseconds (about 292 years either way).
- A number is finite unless a field says otherwise; a text or a list has a bounded size.
"""

from __future__ import annotations

import enum
import functools
import math
import re
from collections.abc import Sized
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from qtmesh.base.errors import InvalidArgument

E = TypeVar("E", bound=enum.Enum)


_NANOS_PER_SECOND = 1_000_000_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
EARLIEST_TIME = _INT64_MIN
"""The earliest time a Timestamp may name, in Unix nanoseconds (1677-09-21T00:12:43.145224192Z)."""
LATEST_TIME = _INT64_MAX
"""The latest time a Timestamp may name, in Unix nanoseconds (2262-04-11T23:47:16.854775807Z)."""
_TIME_RANGE = "range 1677-09-21T00:12:43.145224192Z .. 2262-04-11T23:47:16.854775807Z"


def timestamp(nanos: int) -> Timestamp:
    """A Timestamp from Unix nanoseconds."""
    ts = Timestamp()
    ts.FromNanoseconds(int(nanos))
    return ts


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def time_from_proto(message: Timestamp, *, field: str) -> int:
    """Unix nanoseconds of a Timestamp; out of range (see the module rules) is InvalidArgument."""
    if not 0 <= message.nanos < _NANOS_PER_SECOND:
        raise InvalidArgument(f"{field}.nanos", f"{message.nanos} is not in 0..999999999")
    nanos = message.seconds * _NANOS_PER_SECOND + message.nanos
    if not _INT64_MIN <= nanos <= _INT64_MAX:
        raise InvalidArgument(
            field, f"{message.seconds} s after 1970 is outside the supported {_TIME_RANGE}"
        )
    return nanos


def optional_time_from_proto(message: Any, name: str, *, field: str | None = None) -> int | None:
    """Unix nanoseconds of the Timestamp field ``name`` of ``message``, None when it is unset.
    ``field`` names it in errors (default: ``name``)."""
    if not message.HasField(name):
        return None
    return time_from_proto(getattr(message, name), field=field or name)


def seconds_from_proto(message: Duration, *, field: str) -> float:
    """The seconds of a Duration; invalid (see the module rules) is InvalidArgument."""
    return duration_nanos_from_proto(message, field=field) / _NANOS_PER_SECOND


def duration_nanos_from_proto(message: Duration, *, field: str) -> int:
    """The nanoseconds of a Duration; invalid (see the module rules) is InvalidArgument."""
    seconds, nanos = message.seconds, message.nanos
    if not -_NANOS_PER_SECOND < nanos < _NANOS_PER_SECOND:
        raise InvalidArgument(f"{field}.nanos", f"{nanos} is not in -999999999..999999999")
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        raise InvalidArgument(field, f"seconds ({seconds}) and nanos ({nanos}) differ in sign")
    total = seconds * _NANOS_PER_SECOND + nanos
    if not _INT64_MIN <= total <= _INT64_MAX:
        raise InvalidArgument(field, f"{seconds} s is longer than about 292 years")
    return total


def finite(
    value: float, *, field: str, minimum: float | None = None, maximum: float | None = None
) -> float:
    """``value`` when it is a finite number within the bounds given, else InvalidArgument."""
    if not math.isfinite(value):
        raise InvalidArgument(field, f"{value} is not a finite number")
    if minimum is not None and value < minimum:
        raise InvalidArgument(field, f"{value} is below {minimum}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(field, f"{value} is above {maximum}")
    return value


def bounded(items: Sized, *, field: str, at_most: int) -> None:
    """InvalidArgument unless ``items`` (a text, a list or a map) holds at most ``at_most``."""
    if len(items) > at_most:
        raise InvalidArgument(field, f"holds {len(items)}, more than the {at_most} allowed")


def _prefix(proto_enum: Any) -> str:
    name = proto_enum.DESCRIPTOR.name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"


@functools.cache  # a handful of enum pairs, converted on every message
def _tables(proto_enum: Any, domain_enum: type[E]) -> tuple[dict[E, int], dict[int, E]]:
    """Domain member -> proto value and back, for the members both enums name."""
    prefix = _prefix(proto_enum)
    names = set(proto_enum.keys())
    to_proto = {
        m: int(proto_enum.Value(prefix + m.name)) for m in domain_enum if prefix + m.name in names
    }
    return to_proto, {value: member for member, value in to_proto.items()}


def enum_to_proto(proto_enum: Any, member: enum.Enum) -> Any:
    """The proto value of a domain enum member with the same name (``ActionType.HALT_TRADING``
    -> ``ACTION_TYPE_HALT_TRADING``). An int; typed Any because the generated stubs type an enum
    field as its enum class, which an int is at run time."""
    try:
        return _tables(proto_enum, type(member))[0][member]
    except KeyError:
        raise ValueError(f"{proto_enum.DESCRIPTOR.name} has no value for {member!r}") from None


def enum_from_proto(domain_enum: type[E], proto_enum: Any, value: int, *, field: str) -> E:
    """The domain member for a proto value; unspecified or unknown values are InvalidArgument."""
    member: E | None = _tables(proto_enum, domain_enum)[1].get(value)
    if member is not None:
        return member
    try:
        proto_enum.Name(value)
    except ValueError:
        raise InvalidArgument(field, f"unknown value {value}") from None
    choices = ", ".join(m.name for m in domain_enum)
    raise InvalidArgument(field, f"must be set to one of {choices}")
