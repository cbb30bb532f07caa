"""Page sizes and opaque page tokens for List RPCs (page_size, page_token, next_page_token)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from qtmesh.base.errors import InvalidArgument


def page_size(requested: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    """0 means ``default``; more than ``maximum`` is served as ``maximum``; negative is an error."""
    if requested < 0:
        raise InvalidArgument(field, f"must not be negative (got {requested})")
    return min(requested or default, maximum)


def encode_token(**fields: Any) -> str:
    """An opaque token carrying ``fields`` (JSON-serialisable values)."""
    return base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()).decode()


def decode_token(
    token: str, *, expect: dict[str, Any], field: str = "page_token"
) -> dict[str, Any]:
    """The fields of a token from :func:`encode_token`; ``expect`` must match (same query)."""
    try:
        fields = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument(field, "is not a token this server issued") from None
    if not isinstance(fields, dict):
        raise InvalidArgument(field, "is not a token this server issued")
    for key, value in expect.items():
        if fields.get(key) != value:
            raise InvalidArgument(field, f"was issued for {key}={fields.get(key)!r}, not {value!r}")
    return fields
