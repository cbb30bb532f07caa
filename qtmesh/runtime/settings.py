"""The reference of every setting, read from the config dataclasses themselves.

``qtmesh settings`` prints it as Markdown, and docs/configuration.md is that output (a test
fails when the two differ), so the reference cannot fall behind the code.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qtmesh.base import config as configuration
from qtmesh.runtime import catalog
from qtmesh.runtime.channels import CLIENT_ENV_PREFIX, ChannelConfig
from qtmesh.runtime.server import ENV_PREFIX, ServerConfig

__all__ = ["known_variables", "settings_markdown", "unknown_variables"]

# The mesh's own variables that are no setting: the supervisor's pid, told to each child.
_OTHER_VARIABLES = frozenset({"QTMESH_SUPERVISOR_PID"})
# How alike a misspelt variable and a known one must be to name it (difflib's ratio).
_CLOSE_ENOUGH = 0.75

_HEADER = """# Configuration

Every setting of every service, generated from the config dataclasses by `qtmesh settings`
(do not edit by hand: `make docs` regenerates this file, and a test fails when it is stale).

A setting is read from its command-line flag (`qtmesh serve SERVICE --flag value`), else its
environment variable, else its default, and is checked at start-up: a bad value stops the server
with a message naming the flag and the variable. Lists are comma-separated (`a,b,c`), maps are
`key=value` pairs separated by commas, booleans are `true`/`false` (also `1`/`0`, `yes`/`no`,
`on`/`off`). Secrets never appear in logs or `repr`. A variable shown as *formerly* `X` is also
read under its old name `X`, with a warning, until the next release. A `QTMESH_*` variable that
no setting reads is reported by every `qtmesh` command as a warning naming the closest setting
(`QTMESH_MARKET_SEEDD is not a setting; did you mean QTMESH_MARKET_SEED?`).
"""


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "(none)"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _type_name(annotation: Any) -> str:
    """A type as a reader would say it: ``float or unset``, ``list of str``, ``secret``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or unset" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple:
        return f"list of {_type_name(args[0])}"
    if origin in (dict, Mapping):
        return "map"
    if annotation is configuration.Secret:
        return "secret"
    if annotation is Path:
        return "path"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _table(cls: type, env_prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = [
        "| setting | variable | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for field in dataclasses.fields(cls):
        variable = configuration.env_name(field, env_prefix)
        old = configuration.renamed_variable(variable)
        shown_variable = f"`{variable}`" + (f" (formerly `{old}`)" if old else "")
        meaning = str(field.metadata.get("help", "")).replace("|", "\\|")
        rows.append(
            f"| `{configuration.flag_name(field)}` | {shown_variable} "
            f"| {_type_name(hints[field.name])} | `{_shown(_default(field))}` | {meaning} |"
        )
    return rows


def _settings_classes(service: str | None) -> list[tuple[type, str]]:
    entries = catalog.CATALOG if service is None else (catalog.entry(service),)
    return [
        (ServerConfig, ENV_PREFIX),
        (ChannelConfig, CLIENT_ENV_PREFIX),
        *((e.load().config_type, e.load().env_prefix) for e in entries),
    ]


def known_variables(service: str | None = None) -> frozenset[str]:
    """Every QTMESH_* variable some process of the mesh reads (with ``service``, that service's
    process), former names included."""
    names = set(_OTHER_VARIABLES)
    for cls, prefix in _settings_classes(service):
        for field in dataclasses.fields(cls):
            name = configuration.env_name(field, prefix)
            names.add(name)
            old = configuration.renamed_variable(name)
            if old is not None:
                names.add(old)
    return frozenset(names)


def _owner(variable: str) -> str | None:
    """The service whose prefix (or former prefix) ``variable`` has, the longest one winning
    (``QTMESH_META_OPTIMIZER_X`` is the meta optimizer's, not meta's); None for none."""
    prefixes = {configuration.service_env_prefix(name): name for name in catalog.names()}
    for new, old in configuration.RENAMED_ENV_PREFIXES.items():
        prefixes[old] = prefixes[new]
    matching = [p for p in prefixes if variable.startswith(p)]
    return prefixes[max(matching, key=len)] if matching else None


def unknown_variables(
    environ: Mapping[str, str], *, service: str | None = None
) -> list[tuple[str, str | None]]:
    """Each QTMESH_* variable of ``environ`` that nothing reads (a misspelt setting is silently
    ignored otherwise), with the known variable closest to it, if one is close. With
    ``service``, only the variables that service's process reads are judged (another
    service's are that one's to judge), and no other service is loaded to know them."""
    known = known_variables(service)
    unknown = sorted(
        v
        for v in environ
        if v.startswith("QTMESH_")
        and v not in known
        and (service is None or _owner(v) in (None, service))
    )
    return [
        (v, next(iter(difflib.get_close_matches(v, known, n=1, cutoff=_CLOSE_ENOUGH)), None))
        for v in unknown
    ]


def settings_markdown() -> str:
    """The whole reference: every server's settings, every client's, then each service's."""
    lines = [_HEADER]
    lines += [
        "## Every server",
        "",
        f"Variables `{ENV_PREFIX}<SETTING>`; the same for every service.",
        "",
        *_table(ServerConfig, ENV_PREFIX),
        "",
        "## Every client",
        "",
        f"How a process reaches the other services: variables `{CLIENT_ENV_PREFIX}<SETTING>` "
        "(the addresses: `QTMESH_ADDRESSES`).",
        "",
        *_table(ChannelConfig, CLIENT_ENV_PREFIX),
        "",
    ]
    for entry in catalog.CATALOG:
        app = entry.load()
        lines += [
            f"## {app.name}",
            "",
            f"{app.summary[:1].upper()}{app.summary[1:]}. Variables `{app.env_prefix}<SETTING>`"
            f"; default port {entry.default_port}.",
            "",
            *_table(app.config_type, app.env_prefix),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"
