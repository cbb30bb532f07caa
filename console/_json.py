"""Domain objects as JSON values: dataclasses as objects, enums by name, times as they are
(int64 nanoseconds since the epoch, UTC), a number with no finite value as null; an action
and its parameters carry their ``action_type``."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        # An action and its parameters say which type they are only by their class.
        kind = getattr(value, "action_type", None)
        if isinstance(kind, enum.Enum) and "action_type" not in fields:
            fields["action_type"] = kind.name
        return fields
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
