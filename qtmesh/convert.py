"""Small protobuf conversions every adapter needs: timestamps, durations and enums by name."""

from __future__ import annotations

import enum
import re
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from qtmesh.errors import InvalidArgument

E = TypeVar("E", bound=enum.Enum)


def timestamp(nanos: int) -> Timestamp:
    """A Timestamp from Unix nanoseconds."""
    ts = Timestamp()
    ts.FromNanoseconds(int(nanos))
    return ts


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def _prefix(proto_enum: Any) -> str:
    name = proto_enum.DESCRIPTOR.name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper() + "_"


def enum_to_proto(proto_enum: Any, member: enum.Enum) -> int:
    """The proto value of a domain enum member with the same name (``ActionType.HALT_TRADING``
    -> ``ACTION_TYPE_HALT_TRADING``)."""
    return int(proto_enum.Value(_prefix(proto_enum) + member.name))


def enum_from_proto(domain_enum: type[E], proto_enum: Any, value: int, *, field: str) -> E:
    """The domain member for a proto value; unspecified or unknown values are InvalidArgument."""
    try:
        name = proto_enum.Name(value)
    except ValueError:
        raise InvalidArgument(field, f"unknown value {value}") from None
    try:
        return domain_enum[name.removeprefix(_prefix(proto_enum))]
    except KeyError:
        choices = ", ".join(m.name for m in domain_enum)
        raise InvalidArgument(field, f"must be set to one of {choices}") from None
