"""The services the ``qtmesh`` command knows: name, where the App lives, default port.

Apps are imported by name only when needed, so the runtime does not depend on any service.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Collection, Mapping
from typing import Any

from qtmesh.base.config import UnknownName
from qtmesh.runtime.app import App
from qtmesh.runtime.channels import DEFAULT_PORTS


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    target: str
    default_port: int

    def load(self) -> App[Any]:
        module, _, attribute = self.target.partition(":")
        app = getattr(importlib.import_module(module), attribute)
        if not isinstance(app, App):
            raise TypeError(f"{self.target} is not a qtmesh App")
        return app


CATALOG: tuple[Entry, ...] = (
    Entry("market", "market.service:APP", DEFAULT_PORTS["market"]),
    Entry("sesa", "sesa.service:APP", DEFAULT_PORTS["sesa"]),
    Entry("meta", "meta.service:APP", DEFAULT_PORTS["meta"]),
    Entry("memory", "memory.service:APP", DEFAULT_PORTS["memory"]),
    Entry("world-model", "world_model.service:APP", DEFAULT_PORTS["world-model"]),
    Entry("alpha-reporting", "alpha_reporting.service:APP", DEFAULT_PORTS["alpha-reporting"]),
    Entry("meta-optimizer", "meta_optimizer.service:APP", DEFAULT_PORTS["meta-optimizer"]),
    Entry("risk", "agents.risk.service:APP", DEFAULT_PORTS["risk"]),
    Entry("ceo", "agents.ceo.service:APP", DEFAULT_PORTS["ceo"]),
    Entry("strategy", "agents.strategy.service:APP", DEFAULT_PORTS["strategy"]),
    Entry("federation", "federation.service:APP", DEFAULT_PORTS["federation"]),
    Entry("console", "console.service:APP", DEFAULT_PORTS["console"]),
)


def names() -> list[str]:
    return [e.name for e in CATALOG]


def entry(name: str) -> Entry:
    for e in CATALOG:
        if e.name == name:
            return e
    raise UnknownName(f"unknown service {name!r}; known services: {', '.join(names())}")


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


def dependency_cycle(depends: Mapping[str, Collection[str]]) -> list[str]:
    """A cycle of ``depends`` (service: the services it depends on) as a path that ends where it
    starts (``["a", "b", "a"]``), or ``[]`` when there is none. Services not among the keys
    have not said yet what they depend on and close no cycle."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str]:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done or name not in depends:
            return []
        path.append(name)
        for other in sorted(depends[name]):
            cycle = visit(other)
            if cycle:
                return cycle
        path.pop()
        done.add(name)
        return []

    for name in sorted(depends):
        cycle = visit(name)
        if cycle:
            return cycle
    return []
