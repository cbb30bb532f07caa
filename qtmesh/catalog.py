"""The services the ``qtmesh`` command knows: name, where the App lives, default port.

Apps are imported by name only when needed, so the runtime does not depend on any service.
"""

from __future__ import annotations

import dataclasses
import importlib

from qtmesh.app import App


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    target: str
    default_port: int

    def load(self) -> App:
        module, _, attribute = self.target.partition(":")
        app = getattr(importlib.import_module(module), attribute)
        if not isinstance(app, App):
            raise TypeError(f"{self.target} is not a qtmesh App")
        return app


# Default ports are fixed so that `qtmesh up`, `qtmesh status` and clients agree without
# configuration; 50051 is reserved for the federation.
CATALOG: tuple[Entry, ...] = (
    Entry("market", "market.service:APP", 50052),
    Entry("sesa", "sesa.service:APP", 50053),
    Entry("meta", "meta.service:APP", 50054),
    Entry("meta-optimizer", "metaopt.service:APP", 50055),
    Entry("alpha-reporting", "alpha.service:APP", 50056),
)


def names() -> list[str]:
    return [e.name for e in CATALOG]


def entry(name: str) -> Entry:
    for e in CATALOG:
        if e.name == name:
            return e
    raise KeyError(f"unknown service {name!r}; known services: {', '.join(names())}")


def start_layers(selected: list[str]) -> list[list[Entry]]:
    """``selected`` in layers: every service starts after the services it depends on."""
    entries = {name: entry(name) for name in selected}
    depends = {name: set(e.load().depends_on) & set(entries) for name, e in entries.items()}
    layers: list[list[Entry]] = []
    started: set[str] = set()
    while len(started) < len(entries):
        ready = [n for n in entries if n not in started and depends[n] <= started]
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(set(entries) - started)}")
        layers.append([entries[n] for n in ready])
        started |= set(ready)
    return layers
