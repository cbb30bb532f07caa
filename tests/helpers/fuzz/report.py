"""What the fuzz suite saw: per server, service and method, how often each status code came back,
how long the method's fuzzing took and the failures found; written as JSON and summarized in the
terminal at the end of the session (tests/fuzz/conftest.py)."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

REPORT_KEY = pytest.StashKey["FuzzReport"]()


@dataclasses.dataclass
class MethodReport:
    codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    seconds: float = 0.0
    failures: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FuzzReport:
    examples: int
    raw_bodies: int
    # server -> service -> method -> report
    servers: dict[str, dict[str, dict[str, MethodReport]]] = dataclasses.field(default_factory=dict)
    mesh_seconds: float = 0.0

    def method(self, server: str, service: str, method: str) -> MethodReport:
        services = self.servers.setdefault(server, {})
        return services.setdefault(service, {}).setdefault(method, MethodReport())

    def as_json(self) -> dict[str, Any]:
        return {
            "examples_per_rpc": self.examples,
            "raw_bodies_per_rpc": self.raw_bodies,
            "mesh_seconds": round(self.mesh_seconds, 1),
            "servers": {
                server: {
                    service: {
                        method: {
                            "codes": dict(sorted(report.codes.items())),
                            "seconds": round(report.seconds, 2),
                            "failures": report.failures,
                        }
                        for method, report in methods.items()
                    }
                    for service, methods in services.items()
                }
                for server, services in self.servers.items()
            },
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")

    def summary(self) -> list[str]:
        """One line per server and service: the codes seen over all its methods, the methods
        that failed."""
        lines = [
            f"{self.examples} generated requests and {self.raw_bodies} raw bodies per RPC, "
            f"{self.mesh_seconds:.0f} s with the mesh up"
        ]
        for server, services in self.servers.items():
            for service, methods in services.items():
                codes: collections.Counter[str] = collections.Counter()
                for report in methods.values():
                    codes.update(report.codes)
                failed = sorted(m for m, r in methods.items() if r.failures)
                seconds = sum(r.seconds for r in methods.values())
                shown = " ".join(f"{code}={n}" for code, n in sorted(codes.items()))
                verdict = f"FAILED: {', '.join(failed)}" if failed else "ok"
                short = service.rsplit(".", 1)[-1]
                lines.append(f"{server:<16} {short:<24} {seconds:6.1f}s  {shown}  [{verdict}]")
        return lines
