"""Hypothesis strategies of protobuf messages, built from nothing but a message ``Descriptor``.

:func:`messages` draws a message of any type. A third of them are wild: each field unset or one
of the values below, which break servers. The others are plausible: every field set to a value a
server expects (small numbers, the names and times it knows or empty strings, non-empty lists,
one oneof member); in half of them each scalar is one of the values below instead one time in
ten, so requests get past their first checks and carry a bad value deep inside. The values:

* integers: 0, 1, -1 and the extremes of their width (int32, int64, uint32, uint64) among
  uniform draws over the whole range;
* floating point: NaN, ±inf, -0.0, the largest and smallest (subnormal) finite values, values
  past 2**53 among ordinary draws (32-bit fields draw 32-bit floats);
* strings: empty, whitespace, NUL, long (a few KB), non-ASCII, and strings from ``strings``
  (names the caller knows the server uses: symbols, ids) so requests also get past lookups;
  bytes: empty, short, long;
* enums: every declared number and numbers no enum declares (negative, huge);
* repeated fields (at most ``max_repeated`` elements) and map fields (as many entries);
* nested messages to ``max_depth`` levels (deeper ones stay unset: recursive types terminate);
* oneofs: none or exactly one member set (proto3 ``optional`` fields are set or unset alone);
* ``google.protobuf.Timestamp`` and ``Duration``: valid values (the epoch, now-ish, year 1 and
  year 9999) and out-of-range ones (seconds outside years 1..9999 or past ±10000 years, nanos
  outside 0..999999999 or of the other sign than the seconds).

:func:`malformed_bodies` draws raw request bodies for a bytes-passthrough serializer: random
bytes, and encodings broken on purpose (truncated, overlong varints, lengths past the end, wrong
wire types, invalid UTF-8 in string fields, field number 0, unbalanced groups).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    OneofDescriptor,
)
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

F = FieldDescriptor
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
# Valid Timestamp seconds: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
# Valid Duration seconds: ±10000 years.
DURATION_SECONDS = (-315_576_000_000, 315_576_000_000)
NANOS = (0, 999_999_999)
LONG_STRING_CHARS = 4096

_INT_RANGES: dict[int, tuple[int, int]] = {
    F.TYPE_INT32: INT32,
    F.TYPE_SINT32: INT32,
    F.TYPE_SFIXED32: INT32,
    F.TYPE_INT64: INT64,
    F.TYPE_SINT64: INT64,
    F.TYPE_SFIXED64: INT64,
    F.TYPE_UINT32: UINT32,
    F.TYPE_FIXED32: UINT32,
    F.TYPE_UINT64: UINT64,
    F.TYPE_FIXED64: UINT64,
}
_EDGE_DOUBLES = (
    0.0,
    -0.0,
    1.0,
    -1.0,
    math.nan,
    math.inf,
    -math.inf,
    sys.float_info.max,
    -sys.float_info.max,
    sys.float_info.min,
    5e-324,
    -5e-324,
    1e300,
    1e-300,
    2.0**53 + 1,
    -(2.0**63),
    2.0**64,
)
_EDGE_FLOATS = (0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 3.4028234663852886e38, 1e-45)
_EDGE_STRINGS = (
    "",
    " ",
    "\x00",
    "\n\t",
    "0",
    "-1",
    "NaN",
    "é",
    "日本語",
    "\U0001f680",
    "\u202eRTL",
    "../../etc/passwd",
    "' OR 1=1 --",
    "%s%n{0}",
    "a" * LONG_STRING_CHARS,
    "\U0001f680" * (LONG_STRING_CHARS // 4),
)
# Text protobuf can carry: any code point but lone surrogates (not encodable as UTF-8).
_TEXT = st.text(st.characters(codec="utf-8"), max_size=64)


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers in ``low..high``, their edges (0, ±1, the bounds) drawn often."""
    edges = sorted({v for v in (0, 1, -1, low, low + 1, high - 1, high) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(-1000, 1000)).map(
        lambda v: min(max(v, low), high)
    )


def doubles() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from(_EDGE_DOUBLES), st.floats(), st.floats(-1e3, 1e3))


def floats32() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from(_EDGE_FLOATS), st.floats(width=32))


def texts(strings: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """Edge strings, arbitrary text, and ``strings`` (names the server knows)."""
    options = [st.sampled_from(_EDGE_STRINGS), _TEXT]
    if strings:
        options.append(st.sampled_from(sorted(set(strings))))
    return st.one_of(options)


def binaries() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from((b"", b"\x00", b"\xff" * 16, b"\x00" * LONG_STRING_CHARS)),
        st.binary(max_size=64),
    )


def enum_numbers(field: FieldDescriptor) -> st.SearchStrategy[int]:
    """Every declared number of the field's enum and, for open enums, undeclared ones."""
    enum = enum_type(field)
    declared = sorted(v.number for v in enum.values)
    if enum.is_closed:
        return st.sampled_from(declared)
    unknown = sorted({max(declared) + 1, -1, 99, INT32[0], INT32[1]} - set(declared))
    return st.one_of(st.sampled_from(declared), st.sampled_from(unknown))


def timestamps() -> st.SearchStrategy[Message]:
    """Valid Timestamps (epoch, year 1, year 9999, now-ish) and out-of-range ones."""
    from google.protobuf.timestamp_pb2 import Timestamp

    low, high = TIMESTAMP_SECONDS
    valid_seconds = st.one_of(
        st.sampled_from((0, low, high, 1_700_000_000, 1_800_000_000)),
        st.integers(low, high),
        st.integers(1_500_000_000, 2_000_000_000),  # years 2017..2033: market times
    )
    bad_seconds = st.sampled_from((low - 1, high + 1, INT64[0], INT64[1], -(10**15), 10**15))
    bad_nanos = st.sampled_from((-1, NANOS[1] + 1, INT32[0], INT32[1]))
    valid = st.builds(Timestamp, seconds=valid_seconds, nanos=st.integers(*NANOS))
    invalid = st.one_of(
        st.builds(Timestamp, seconds=bad_seconds, nanos=st.integers(*NANOS)),
        st.builds(Timestamp, seconds=valid_seconds, nanos=bad_nanos),
    )
    return st.one_of(valid, invalid)


def durations() -> st.SearchStrategy[Message]:
    """Valid Durations (zero, ±seconds, ±10000 years) and out-of-range or mixed-sign ones."""
    from google.protobuf.duration_pb2 import Duration

    low, high = DURATION_SECONDS

    def signed(seconds: int, nanos: int) -> Message:
        return Duration(seconds=seconds, nanos=-nanos if seconds < 0 else nanos)

    valid_seconds = st.one_of(
        st.sampled_from((0, 1, -1, 60, 86_400, low, high)), st.integers(low, high)
    )
    valid = st.builds(signed, valid_seconds, st.integers(*NANOS))
    invalid = st.one_of(
        st.builds(
            Duration,
            seconds=st.sampled_from((low - 1, high + 1, INT64[0], INT64[1])),
            nanos=st.just(0),
        ),
        st.builds(
            Duration,
            seconds=valid_seconds,
            nanos=st.sampled_from((NANOS[1] + 1, -NANOS[1] - 1, INT32[0], INT32[1])),
        ),
        st.builds(Duration, seconds=st.just(1), nanos=st.just(-1)),  # signs disagree
        st.builds(Duration, seconds=st.just(-1), nanos=st.just(1)),
    )
    return st.one_of(valid, invalid)


def plausible_timestamps(times: Sequence[int] = ()) -> st.SearchStrategy[Message]:
    """Valid Timestamps a server would expect: years 2017..2033, and within three days of
    ``times`` (seconds the server's answers held, such as its market clock)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    seconds = [st.integers(1_500_000_000, 2_000_000_000)]
    if times:
        near = st.tuples(st.sampled_from(sorted(set(times))), st.integers(-3 * 86_400, 3 * 86_400))
        seconds.append(near.map(sum))
    return st.builds(Timestamp, seconds=st.one_of(seconds), nanos=st.integers(*NANOS))


def plausible_durations() -> st.SearchStrategy[Message]:
    from google.protobuf.duration_pb2 import Duration

    return st.builds(Duration, seconds=st.integers(0, 30 * 86_400), nanos=st.integers(*NANOS))


class _Builder:
    """Makes (and caches, per type and depth) the strategies of one :func:`messages` call.

    ``edge_odds`` 1 (wild): every field is unset or drawn from the edge values. Otherwise every
    field is set to a plausible value (small numbers, known names or empty strings, valid times,
    non-empty lists, one member of each oneof), of which each scalar is an edge value instead
    one time in ``edge_odds`` (never for 0): requests that pass most checks, with a bad value
    deep inside, or none.
    """

    def __init__(
        self,
        *,
        edge_odds: int,
        max_depth: int,
        max_repeated: int,
        strings: Sequence[str],
        times: Sequence[int],
    ) -> None:
        self.edge_odds = edge_odds
        self.wild = edge_odds == 1
        self.max_depth = max_depth
        self.max_repeated = max_repeated
        self.strings = sorted(set(strings))
        self.times = times
        self._cache: dict[tuple[str, int], st.SearchStrategy[Message]] = {}

    def message(self, descriptor: Descriptor, depth: int) -> st.SearchStrategy[Message]:
        key = (descriptor.full_name, depth)
        if key not in self._cache:
            self._cache[key] = self._message(descriptor, depth)
        return self._cache[key]

    def _mix(
        self, plausible: st.SearchStrategy[Any], edge: st.SearchStrategy[Any]
    ) -> st.SearchStrategy[Any]:
        if self.wild:
            return edge
        if self.edge_odds == 0:
            return plausible
        return st.one_of(*([plausible] * (self.edge_odds - 1)), edge)

    def _message(self, descriptor: Descriptor, depth: int) -> st.SearchStrategy[Message]:
        name = descriptor.full_name
        if name == "google.protobuf.Timestamp":
            return self._mix(plausible_timestamps(self.times), timestamps())
        if name == "google.protobuf.Duration":
            return self._mix(plausible_durations(), durations())
        cls = GetMessageClass(descriptor)
        real_oneofs = [o for o in descriptor.oneofs if not _synthetic(o)]
        in_real_oneof = {f.name for o in real_oneofs for f in o.fields}
        parts: dict[str, st.SearchStrategy[Any]] = {}
        for field in descriptor.fields:
            if field.name in in_real_oneof:
                continue
            value = self.field(field, depth)
            if value is not None:
                # Wild, unset is as likely as set: proto3 defaults are requests too.
                parts[field.name] = st.none() | value if self.wild else value
        for oneof in real_oneofs:
            members = [
                st.tuples(st.just(f.name), value)
                for f in oneof.fields
                if (value := self.field(f, depth)) is not None
            ]
            parts[f"oneof:{oneof.name}"] = st.one_of(
                *([st.none()] if self.wild or not members else []), *members
            )
        return st.fixed_dictionaries(parts).map(lambda values: _assemble(cls, descriptor, values))

    def field(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
        """The strategy of the field's whole value (a list or dict for repeated and map
        fields); None for a message field past the depth limit (left unset)."""
        least = 0 if self.wild else 1
        if is_map(field):
            key_field, value_field = message_type(field).fields
            value = self.single(value_field, depth + 1)
            if value is None:
                return None
            return st.dictionaries(
                self.single(key_field, depth + 1),  # type: ignore[arg-type]
                value,
                min_size=least,
                max_size=self.max_repeated,
            )
        element = self.single(field, depth)
        if element is None:
            return None
        if field.is_repeated:
            return st.lists(element, min_size=least, max_size=self.max_repeated)
        return element

    def single(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
        kind = field.type
        if kind in (F.TYPE_MESSAGE, F.TYPE_GROUP):
            if depth >= self.max_depth:
                return None
            return self.message(message_type(field), depth + 1)
        if kind in _INT_RANGES:
            low, high = _INT_RANGES[kind]
            small = st.one_of(st.integers(max(low, 0), 10), st.integers(max(low, 0), 1000))
            return self._mix(small, integers(low, high))
        if kind == F.TYPE_DOUBLE:
            return self._mix(st.one_of(st.floats(0, 1), st.floats(-10, 10)), doubles())
        if kind == F.TYPE_FLOAT:
            return self._mix(st.floats(0, 1, width=32), floats32())
        if kind == F.TYPE_BOOL:
            return st.booleans()
        if kind == F.TYPE_STRING:
            known = st.sampled_from(self.strings) if self.strings else _TEXT
            return self._mix(st.just("") | known, texts(self.strings))
        if kind == F.TYPE_BYTES:
            return self._mix(st.binary(min_size=1, max_size=16), binaries())
        if kind == F.TYPE_ENUM:
            declared = st.sampled_from([v.number for v in enum_type(field).values])
            return self._mix(declared, enum_numbers(field))
        raise TypeError(f"unsupported field type {kind} of {field.full_name}")


def _synthetic(oneof: OneofDescriptor) -> bool:
    """The oneof protoc makes for a proto3 ``optional`` field (one member, named after it)."""
    return len(oneof.fields) == 1 and oneof.name == f"_{oneof.fields[0].name}"


def message_type(field: FieldDescriptor) -> Descriptor:
    """The type of a message field."""
    if field.message_type is None:
        raise TypeError(f"{field.full_name} is no message field")
    return field.message_type


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    """The type of an enum field."""
    if field.enum_type is None:
        raise TypeError(f"{field.full_name} is no enum field")
    return field.enum_type


def is_map(field: FieldDescriptor) -> bool:
    """Whether ``field`` is a map (a repeated field of generated entry messages)."""
    return (
        field.type == F.TYPE_MESSAGE
        and field.is_repeated
        and bool(message_type(field).GetOptions().map_entry)
    )


def _assemble(cls: type[Message], descriptor: Descriptor, values: dict[str, Any]) -> Message:
    message = cls()
    for key, value in values.items():
        if value is None:
            continue
        if key.startswith("oneof:"):
            name, value = value
        else:
            name = key
        _set(message, descriptor.fields_by_name[name], value)
    return message


def _set(message: Message, field: FieldDescriptor, value: Any) -> None:
    if is_map(field):
        target = getattr(message, field.name)
        message_values = message_type(field).fields_by_name["value"].type == F.TYPE_MESSAGE
        for key, item in value.items():
            if message_values:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        target = getattr(message, field.name)
        if field.type == F.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.type == F.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


def messages(
    descriptor: Descriptor,
    *,
    max_depth: int = 3,
    max_repeated: int = 4,
    strings: Sequence[str] = (),
    times: Sequence[int] = (),
) -> st.SearchStrategy[Message]:
    """Messages of type ``descriptor``: see the module docstring for the values drawn.

    A third are wild (every field unset or an edge value), a third plausible with an edge value
    one time in ten per field, a third entirely plausible (``_Builder``). ``max_depth`` bounds
    the nesting of message fields, ``max_repeated`` the length of repeated and map fields;
    ``strings`` (names the server knows) are drawn for string fields and ``times`` (Timestamp
    seconds the server uses) anchor plausible Timestamps.
    """
    options: dict[str, Any] = {
        "max_depth": max_depth,
        "max_repeated": max_repeated,
        "strings": strings,
        "times": times,
    }
    return st.one_of(
        [_Builder(edge_odds=odds, **options).message(descriptor, 0) for odds in (1, 10, 0)]
    )


# -- malformed bodies -----------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


_WIRE_TYPES: dict[int, int] = {
    **dict.fromkeys(
        (F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_SINT32, F.TYPE_SINT64),
        0,
    ),
    F.TYPE_BOOL: 0,
    F.TYPE_ENUM: 0,
    F.TYPE_FIXED64: 1,
    F.TYPE_SFIXED64: 1,
    F.TYPE_DOUBLE: 1,
    F.TYPE_FIXED32: 5,
    F.TYPE_SFIXED32: 5,
    F.TYPE_FLOAT: 5,
    F.TYPE_STRING: 2,
    F.TYPE_BYTES: 2,
    F.TYPE_MESSAGE: 2,
}


def _broken_encodings(descriptor: Descriptor) -> list[bytes]:
    """Bodies that are no valid encoding of ``descriptor``'s message, field by field."""
    bodies = [
        b"\x08",  # a tag without its varint
        b"\x08" + b"\xff" * 10 + b"\x01",  # a varint longer than 10 bytes
        b"\x0a\x7f",  # a length past the end
        b"\x0a" + b"\xff" * 5 + b"\x0f",  # a length past 2**32
        b"\x00",  # field number 0
        b"\x0f",  # wire type 7 does not exist
        b"\x0b",  # a group that never ends
        b"\x0c",  # a group end without a start
        b"\x09\x01\x02",  # a fixed64 cut short
        b"\xff" * 32,
    ]
    for field in descriptor.fields:
        wire_type = _WIRE_TYPES.get(field.type)
        if wire_type is None:
            continue
        # The wrong wire type: a length-delimited value where a varint belongs, and back.
        other = 0 if wire_type == 2 else 2
        bodies.append(_tag(field.number, other) + (b"\x01" if other == 0 else b"\x02ab"))
        if field.type == F.TYPE_STRING:
            for invalid in (b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"):
                bodies.append(_tag(field.number, 2) + _varint(len(invalid)) + invalid)
        if field.type == F.TYPE_MESSAGE:
            # A submessage whose own body is truncated.
            bodies.append(_tag(field.number, 2) + b"\x02\x0a\x7f")
        if wire_type == 0:
            bodies.append(_tag(field.number, 0) + b"\x80" * 4)  # a varint cut short
    return bodies


def malformed_bodies(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """Raw bodies for ``descriptor``'s requests: broken encodings, random bytes, and valid
    encodings cut short or with bytes flipped."""

    def mangle(body: bytes, cut: int, flip: int) -> bytes:
        if not body:
            return b"\x80"
        if cut % 2:
            return body[: cut % len(body)]
        position = flip % len(body)
        return body[:position] + bytes([body[position] ^ 0xFF]) + body[position + 1 :]

    mangled = st.builds(
        mangle,
        messages(descriptor, max_depth=2, max_repeated=2).map(lambda m: m.SerializeToString()),
        st.integers(0, 2**16),
        st.integers(0, 2**16),
    )
    broken = st.sampled_from(_broken_encodings(descriptor))
    return st.one_of(broken, st.binary(max_size=256), mangled)
