"""Read-only mappings, so frozen dataclasses stay immutable all the way down."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["frozen_map"]


def frozen_map(values: Mapping[str, float] | None) -> Mapping[str, float]:
    """A read-only copy of ``values`` (empty for None)."""
    return MappingProxyType(dict(values or {}))
