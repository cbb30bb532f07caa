"""The services the ``qtmesh`` command knows: name, where the App lives, default port.

Apps are imported by name only when needed, so the runtime does not depend on any service.
"""

from __future__ import annotations

import dataclasses
import importlib

from qtmesh.app import App
from qtmesh.config import UnknownName


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
# configuration (every service of the design, built or not).
DEFAULT_PORTS = {
    "federation": 50051,
    "market": 50052,
    "sesa": 50053,
    "meta": 50054,
    "meta-optimizer": 50055,
    "alpha-reporting": 50056,
    "ceo": 50057,
    "risk": 50058,
    "strategy": 50059,
    "memory": 50060,
    "world-model": 50061,
}

CATALOG: tuple[Entry, ...] = (
    Entry("market", "market.service:APP", DEFAULT_PORTS["market"]),
    Entry("sesa", "sesa.service:APP", DEFAULT_PORTS["sesa"]),
    Entry("meta", "meta.service:APP", DEFAULT_PORTS["meta"]),
    Entry("memory", "agents.memory.service:APP", DEFAULT_PORTS["memory"]),
    Entry("world-model", "agents.world_model.service:APP", DEFAULT_PORTS["world-model"]),
    Entry("alpha-reporting", "alpha.service:APP", DEFAULT_PORTS["alpha-reporting"]),
    Entry("meta-optimizer", "metaopt.service:APP", DEFAULT_PORTS["meta-optimizer"]),
    Entry("risk", "agents.risk.service:APP", DEFAULT_PORTS["risk"]),
    Entry("ceo", "agents.ceo.service:APP", DEFAULT_PORTS["ceo"]),
    Entry("strategy", "agents.strategy.service:APP", DEFAULT_PORTS["strategy"]),
    Entry("federation", "federation.service:APP", DEFAULT_PORTS["federation"]),
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
