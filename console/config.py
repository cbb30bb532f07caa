"""Settings of the console (environment variables QTMESH_CONSOLE_<NAME>)."""

from __future__ import annotations

import dataclasses

from qtmesh.base.config import Secret, require, setting

ENV_PREFIX = "QTMESH_CONSOLE_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsoleConfig:
    """The console stores nothing: every page reads the services it shows."""

    http_host: str = setting("127.0.0.1", help="interface the web pages and the API listen on")
    http_port: int = setting(8090, help="port of the web pages and the API (0: any free port)")
    operator_token: Secret | None = setting(
        None,
        help="bearer token that actions (run a cycle, generate a plan) need; empty: the console "
        "is read-only",
    )
    page_size: int = setting(50, help="rows per page of a table by default")
    recent_plans: int = setting(50, help="plans a page loads before following the live stream")

    def __post_init__(self) -> None:
        require(0 <= self.http_port <= 65_535, "http_port", "must be in 0..65535")
        require(1 <= self.page_size <= 1000, "page_size", "must be in 1..1000")
        require(1 <= self.recent_plans <= 1000, "recent_plans", "must be in 1..1000")
