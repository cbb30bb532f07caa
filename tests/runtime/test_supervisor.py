"""The supervisor with real child processes: start-up events in order, a dependent held until
what it depends on serves, metrics endpoints planned and written to the state file, the fork
server and its fallback; and the pure parts (dependency cycles, RPC rates from two scrapes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from market.client import MarketClient
from qtmesh.base.errors import MeshError
from qtmesh.cli import Rates, Scrape, handled_counts, rpc_rates
from qtmesh.runtime import catalog
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import (
    LOADING,
    PRELOADED,
    SERVING,
    STARTING,
    WAITING,
    Child,
    Mesh,
    _Slots,
    running_mesh,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="child processes, pidfds")

ENV = {**os.environ, "QTMESH_LOG_FORMAT": "json"}


def _scrape(endpoint: str) -> str:
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=10) as response:
        return response.read().decode()


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def test_a_dependent_waits_at_its_gate_until_what_it_depends_on_serves(tmp_path: Path):
    events: list[tuple[str, str, tuple[str, ...]]] = []
    memory_waits = asyncio.Event()

    def changed(child: Child) -> None:
        events.append((child.name, child.status, child.waiting_on))
        # The market is held while it loads, so memory loads first and must wait for it; it
        # goes on once memory is seen waiting.
        if (child.name, child.status) == ("market", LOADING):
            os.kill(child.pid, signal.SIGSTOP)
        if (child.name, child.status) == ("memory", WAITING):
            market = next(c for c in mesh.children if c.name == "market")
            os.kill(market.pid, signal.SIGCONT)
            memory_waits.set()

    mesh = Mesh(host="127.0.0.1", ephemeral=True, log_dir=tmp_path, env=ENV, on_change=changed)
    await mesh.start(["market", "memory"])
    try:
        assert memory_waits.is_set()
        of = {name: [(s, w) for n, s, w in events if n == name] for name in ("market", "memory")}
        assert of["market"] == [(LOADING, ()), (STARTING, ()), (SERVING, ())]
        assert of["memory"] == [
            (LOADING, ()),
            (WAITING, ("market",)),
            (STARTING, ()),
            (SERVING, ()),
        ]
        # Memory builds only once the market serves.
        assert events.index(("market", SERVING, ())) < events.index(("memory", STARTING, ()))
        memory = next(c for c in mesh.children if c.name == "memory")
        assert memory.depends_on == ("market",)
        # Forked by the fork server, not started by this process.
        assert _parent_of(memory.pid) != os.getpid()

        # A forked child's exit is reported, with the signal that ended it.
        memory.process.kill()
        exited = await mesh.wait_for_exit()
        assert exited is memory
        assert memory.process.returncode == -signal.SIGKILL
    finally:
        await mesh.stop()


async def test_each_service_serves_metrics_on_a_planned_port_written_to_the_state_file(
    tmp_path: Path,
):
    async with running_mesh(["market"], log_dir=tmp_path, env=ENV) as mesh:
        [market] = mesh.children
        host, port = market.metrics.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) != int(market.address.rsplit(":", 1)[1])
        mesh.write_state(tmp_path / "mesh.json")
        state = json.loads((tmp_path / "mesh.json").read_text())["market"]
        assert state["metrics"] == market.metrics
        assert state["address"] == market.address
        assert "endpoints" not in state  # the metrics endpoint is not repeated there

        # Rates from two scrapes of the real endpoint, around calls whose count is known.
        before = handled_counts(await asyncio.to_thread(_scrape, market.metrics))
        async with open_channel(market.address) as channel:
            client = MarketClient(channel)
            for _ in range(5):
                await client.snapshot()
            for _ in range(3):
                with pytest.raises(MeshError):
                    await client.bars("NO-SUCH-SYMBOL", lookback=1)
        after = handled_counts(await asyncio.to_thread(_scrape, market.metrics))

    def grown(method: str, ok: bool) -> float:
        return sum(
            value - before.get(series, 0.0)
            for series, value in after.items()
            if dict(series)["grpc_method"] == method and (dict(series)["grpc_code"] == "OK") == ok
        )

    assert grown("Snapshot", ok=True) == 5
    assert grown("GetBars", ok=False) == 3
    rates = rpc_rates(Scrape(10.0, before), Scrape(12.0, after))
    assert rates.calls >= 8 / 2
    assert rates.errors == 3 / 2


async def test_without_metrics_no_endpoint_and_a_set_variable_is_left_to_the_service(
    tmp_path: Path,
):
    env = {**ENV, "QTMESH_METRICS_PORT": "0"}
    async with running_mesh(["market"], log_dir=tmp_path / "a", env=env, metrics=False) as mesh:
        [market] = mesh.children
        assert market.metrics == ""
        mesh.write_state(tmp_path / "mesh.json")
        assert "metrics" not in json.loads((tmp_path / "mesh.json").read_text())["market"]
    # Set in the environment (0: each service picks a free port), it is not replaced.
    async with running_mesh(["market"], log_dir=tmp_path / "b", env=env) as mesh:
        [market] = mesh.children
        assert market.metrics
        assert "grpc_server_handled_total" in await asyncio.to_thread(_scrape, market.metrics)


async def test_without_the_fork_server_each_child_is_a_new_interpreter(tmp_path: Path):
    mesh = Mesh(host="127.0.0.1", ephemeral=True, log_dir=tmp_path, env=ENV, fork=False)
    await mesh.start(["market"])
    try:
        [market] = mesh.children
        assert market.status == SERVING
        assert _parent_of(market.pid) == os.getpid()
        assert not (tmp_path / "fork-server.log").exists()
    finally:
        codes = await mesh.stop()
    assert codes == {"market": 0}


def test_the_fork_server_preloads_nothing_that_starts_a_thread_or_numpy():
    """A fork copies only the thread that forks: the fork server refuses to fork with a second
    thread, so its preloads must start none (numpy starts OpenBLAS's threads on import)."""
    program = f"""
import importlib, os, pkgutil, sys
for name in {list(PRELOADED)!r}:
    if name.endswith(".*"):
        package = importlib.import_module(name[:-2])
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    else:
        importlib.import_module(name)
print(len(os.listdir("/proc/self/task")), "numpy" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["1", "False"]


def test_a_dependency_cycle_is_found_among_the_services_that_said_what_they_depend_on():
    assert catalog.dependency_cycle({"a": ["b"], "b": ["c"], "c": []}) == []
    assert catalog.dependency_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]
    assert catalog.dependency_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c", "b"]
    # "c" has not loaded yet: it closes no cycle until it says what it depends on.
    assert catalog.dependency_cycle({"a": ["c"], "b": ["a"]}) == []
    assert catalog.dependency_cycle({"a": ["a"]}) == ["a", "a"]
    # The catalog's own services have none.
    layers = catalog.start_layers(catalog.names())
    assert not catalog.dependency_cycle(
        {e.name: e.load().depends_on for layer in layers for e in layer}
    )


def _exposition(*, a: float, e: float, b: float) -> str:
    """A scrape with three handled series (A OK, A NOT_FOUND, B OK) and one other counter."""

    def handled(method: str, kind: str, code: str, value: float) -> str:
        labels = f'grpc_service="s",grpc_method="{method}",grpc_type="{kind}",grpc_code="{code}"'
        return f"grpc_server_handled_total{{{labels}}} {value}"

    return "\n".join(
        [
            "# HELP grpc_server_handled_total Total number of RPCs completed on the server.",
            "# TYPE grpc_server_handled_total counter",
            handled("A", "UNARY", "OK", a),
            handled("A", "UNARY", "NOT_FOUND", e),
            handled("B", "SERVER_STREAM", "OK", b),
            handled("Check", "UNARY", "OK", a + b).replace('"s"', '"grpc.health.v1.Health"'),
            "# HELP grpc_server_started_total Total number of RPCs started on the server.",
            "# TYPE grpc_server_started_total counter",
            'grpc_server_started_total{grpc_service="s",grpc_method="A",grpc_type="UNARY"} 1000',
            "",
        ]
    )


def test_rates_are_the_growth_of_the_handled_counters_between_two_scrapes():
    before = handled_counts(_exposition(a=10, e=2, b=1))
    assert len(before) == 4  # grpc_server_started_total is not among them
    # Health checks (of which there were as many as of the rest) do not count.
    after = handled_counts(_exposition(a=30, e=6, b=1))
    assert rpc_rates(Scrape(100.0, before), Scrape(102.0, after)) == Rates(12.0, 2.0)
    # Nothing happened: nothing per second.
    assert rpc_rates(Scrape(0.0, after), Scrape(5.0, after)) == Rates(0.0, 0.0)


def test_a_restarted_service_counts_from_zero_and_a_new_series_in_full():
    before = handled_counts(_exposition(a=500, e=9, b=0))
    # Restarted: every counter went down; what they count now all happened since.
    after = handled_counts(_exposition(a=4, e=1, b=0))
    assert rpc_rates(Scrape(0.0, before), Scrape(1.0, after)) == Rates(5.0, 1.0)
    # A series seen for the first time (its first error) grew from zero.
    without = {k: v for k, v in before.items() if dict(k)["grpc_code"] == "OK"}
    assert len(without) == 3
    assert rpc_rates(Scrape(0.0, without), Scrape(1.0, before)) == Rates(9.0, 9.0)
    with pytest.raises(ValueError, match="after the first"):
        rpc_rates(Scrape(1.0, before), Scrape(1.0, before))


async def test_a_busy_slot_goes_to_a_child_that_may_start_before_one_that_would_load():
    slots = _Slots(1)
    await slots.acquire(urgent=False)
    granted: list[str] = []

    async def wait(name: str, *, urgent: bool) -> None:
        await slots.acquire(urgent=urgent)
        granted.append(name)

    loads = [asyncio.ensure_future(wait(f"load {i}", urgent=False)) for i in range(3)]
    start = asyncio.ensure_future(wait("start", urgent=True))
    await asyncio.sleep(0)  # one turn of the loop: every waiter queued, in that order
    loads[1].cancel()  # gave up: it gets no slot, and takes none from the others
    slots.release()
    await start
    assert granted == ["start"]
    slots.release()
    await loads[0]
    slots.release()
    await loads[2]
    assert granted == ["start", "load 0", "load 2"]
    slots.release()
    await slots.acquire(urgent=False)  # the slot was given back
