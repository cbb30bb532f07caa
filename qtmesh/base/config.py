"""Configuration as frozen dataclasses, filled from defaults, then environment, then flags.

Every setting is a dataclass field declared with :func:`setting`, which carries its help text. A
config class validates itself in ``__post_init__`` and raises :class:`ConfigError` naming the
setting, so a bad value stops a server at start-up with a message instead of failing later.

A service's variables are ``QTMESH_<SERVICE>_<SETTING>`` (:func:`service_env_prefix`). A prefix
that was renamed keeps working for one release: its variables are read when the new ones are
unset, with a warning naming the new variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import structlog

T = TypeVar("T")

# New prefix -> the prefix it replaced (still read, with a warning, until the next release).
RENAMED_ENV_PREFIXES: Mapping[str, str] = {
    "QTMESH_ALPHA_REPORTING_": "QTMESH_ALPHA_",
    "QTMESH_META_OPTIMIZER_": "QTMESH_METAOPT_",
}
_log = structlog.get_logger("qtmesh.config")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A setting has an invalid value. ``setting`` is the field name; the message names it."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class UnknownName(LookupError):
    """A service or address named on the command line or in configuration does not exist."""


@dataclasses.dataclass(frozen=True)
class Secret:
    """A string that never shows in ``repr``, ``str`` or logs; call :meth:`reveal` to use it."""

    _value: str = dataclasses.field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def setting(default: Any, *, help: str, env: str | None = None) -> Any:
    """Declares a config field. ``env`` overrides the variable name (default: prefix + NAME)."""
    metadata = {"help": help, "env": env}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def service_env_prefix(service: str) -> str:
    """The environment prefix of a service's settings: ``meta-optimizer`` ->
    ``QTMESH_META_OPTIMIZER_``."""
    return f"QTMESH_{service.upper().replace('-', '_')}_"


def env_name(field: dataclasses.Field[Any], prefix: str) -> str:
    return field.metadata.get("env") or f"{prefix}{field.name.upper()}"


def renamed_variable(variable: str) -> str | None:
    """The name ``variable`` had before its prefix was renamed, if it was."""
    for new, old in RENAMED_ENV_PREFIXES.items():
        if variable.startswith(new):
            return old + variable[len(new) :]
    return None


def _lookup(environ: Mapping[str, str], variable: str) -> tuple[str, str] | None:
    """(name, value) of the variable that sets ``variable``: itself, or its old name."""
    if variable in environ:
        return variable, environ[variable]
    old = renamed_variable(variable)
    if old is not None and old in environ:
        _log.warning(
            "deprecated setting variable", variable=old, use=variable, removed="next release"
        )
        return old, environ[old]
    return None


def flag_name(field: dataclasses.Field[Any]) -> str:
    return "--" + field.name.replace("_", "-")


def load(
    cls: type[T],
    *,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Builds ``cls`` from its defaults, the environment and ``overrides`` (flags), in that order.

    Raises :class:`ConfigError` whose message names the flag and the environment variable.
    """
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"not a setting of {cls.__name__}")
    # The variable each setting was read from (a renamed one keeps its old name in messages).
    variables = {name: env_name(field, env_prefix) for name, field in fields.items()}
    for name, field in fields.items():
        try:
            if name in overrides:
                value = overrides[name]
                values[name] = parse(hints[name], value) if isinstance(value, str) else value
            elif (found := _lookup(environ, variables[name])) is not None:
                variables[name] = found[0]
                values[name] = parse(hints[name], found[1])
        except ValueError as exc:
            raise ConfigError(name, f"{exc} ({flag_name(field)} or {variables[name]})") from None
    try:
        return cls(**values)
    except ConfigError as exc:
        failed = fields.get(exc.setting)
        if failed is None:
            raise
        raise ConfigError(
            exc.setting, f"{exc.problem} ({flag_name(failed)} or {variables[exc.setting]})"
        ) from None


def parse(annotation: Any, text: str) -> Any:
    """Parses one setting from its text form by its type annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.strip().lower() in ("", "none"):
            return None
        return parse(options[0], text)
    if annotation is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if annotation is int:
        try:
            return int(text.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    if annotation is Path:
        return Path(text).expanduser()
    if annotation is Secret:
        return Secret(text)
    if origin is tuple:
        (item, *_rest) = typing.get_args(annotation)
        return tuple(parse(item, part.strip()) for part in text.split(",") if part.strip())
    if origin in (dict, Mapping):
        pairs: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected name=value pairs separated by commas, got {part!r}")
            pairs[key.strip()] = value.strip()
        return pairs
    return text


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, env_prefix: str) -> None:
    """Adds one ``--flag`` per field of ``cls``; unset flags leave the setting to env/defaults."""
    group = parser.add_argument_group(f"{cls.__name__} settings")
    for field in dataclasses.fields(cls):
        default: Any = None
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        shown = "unset" if default is None else default
        variable = env_name(field, env_prefix)
        old = renamed_variable(variable)
        if old is not None:
            variable += f", formerly {old}"
        group.add_argument(
            flag_name(field),
            dest=f"{cls.__name__}.{field.name}",
            metavar=field.name.upper(),
            default=argparse.SUPPRESS,
            help=f"{field.metadata.get('help', '')} [env {variable}; default {shown}]",
        )


def flags_for(namespace: argparse.Namespace, cls: type) -> dict[str, str]:
    """The flags of ``cls`` given on the command line, by field name."""
    prefix = f"{cls.__name__}."
    return {
        key[len(prefix) :]: value
        for key, value in vars(namespace).items()
        if key.startswith(prefix)
    }


def require(condition: bool, setting_name: str, problem: str) -> None:
    """Raises ConfigError(setting_name, problem) unless ``condition`` holds."""
    if not condition:
        raise ConfigError(setting_name, problem)
