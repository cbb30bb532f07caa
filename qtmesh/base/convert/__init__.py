"""Public conversions between the base layer's domain types and their protobuf messages.

Every adapter converts the messages it shares with other services through these functions, so
one message has one conversion. Incoming messages are validated: a bad value raises
:class:`~qtmesh.base.errors.InvalidArgument` naming the field. This is the only part of the
base layer that imports protobuf.
"""

from qtmesh.base.convert._bars import (
    bar_from_proto,
    bar_to_proto,
    series_from_proto,
    series_to_proto,
    snapshot_from_proto,
    snapshot_to_proto,
    symbol_info_from_proto,
    symbol_info_to_proto,
)
from qtmesh.base.convert._contract import (
    action_from_proto,
    action_to_proto,
    context_from_proto,
    context_to_proto,
    genome_from_proto,
    genome_to_proto,
    limits_from_proto,
    limits_to_proto,
    parameters_from_proto,
    parameters_to_proto,
    recommendation_from_proto,
    recommendation_to_proto,
)
from qtmesh.base.convert._values import (
    EARLIEST_TIME,
    LATEST_TIME,
    bounded,
    duration,
    duration_nanos_from_proto,
    enum_from_proto,
    enum_to_proto,
    finite,
    optional_time_from_proto,
    seconds_from_proto,
    time_from_proto,
    timestamp,
)

__all__ = [
    "EARLIEST_TIME",
    "LATEST_TIME",
    "action_from_proto",
    "action_to_proto",
    "bar_from_proto",
    "bar_to_proto",
    "bounded",
    "context_from_proto",
    "context_to_proto",
    "duration",
    "duration_nanos_from_proto",
    "enum_from_proto",
    "enum_to_proto",
    "finite",
    "genome_from_proto",
    "genome_to_proto",
    "limits_from_proto",
    "limits_to_proto",
    "optional_time_from_proto",
    "parameters_from_proto",
    "parameters_to_proto",
    "recommendation_from_proto",
    "recommendation_to_proto",
    "seconds_from_proto",
    "series_from_proto",
    "series_to_proto",
    "snapshot_from_proto",
    "snapshot_to_proto",
    "symbol_info_from_proto",
    "symbol_info_to_proto",
    "time_from_proto",
    "timestamp",
]
