"""Small protobuf conversions every adapter needs: timestamps, durations and enums by name."""

from __future__ import annotations

import enum
import functools
import re
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from qtmesh.base.errors import InvalidArgument

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
