"""The qtmesh command in subprocesses: up (its progress, metrics endpoints, state file), status
(and --watch), stop, no orphans, start-up errors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import httpx
import pytest

from federation.client import FederationClient
from federation.plan import Plan
from qtmesh.runtime import catalog
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.settings import unknown_variables
from qtmesh.runtime.supervisor import check_health

ENV = {**os.environ, "QTMESH_LOG_FORMAT": "json"}


def _start_up(cwd: Path, *args: str, env: dict[str, str] = ENV) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qtmesh", "up", "--ephemeral-ports", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _progress(output: str) -> list[tuple[str, str, str]]:
    """(service, status, detail) of each progress line ``  1.23s  memory  WAITING on market``."""
    lines = re.finditer(r"^ *\d+\.\d\ds  (\S+) +([A-Z]+)(.*)$", output, re.MULTILINE)
    return [(m[1], m[2], m[3].strip()) for m in lines]


def _wait_for_table(process: subprocess.Popen[str]) -> str:
    seen = []
    for line in process.stdout:  # type: ignore[union-attr]
        seen.append(line)
        if "Ctrl-C stops every service" in line:
            return "".join(seen)
    raise AssertionError("qtmesh up exited before serving:\n" + "".join(seen))


def _wait_for_exit_of(pid: int, timeout: float) -> bool:
    """True once ``pid`` (not necessarily our child) has exited; waits on its pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def test_up_serves_every_service_and_stops_them_all_on_sigterm(tmp_path: Path):
    process = _start_up(tmp_path)
    try:
        output = _wait_for_table(process)
        assert "market" in output
        assert "SERVING" in output
        # Without a terminal, one line per change, in the order they happened.
        progress = _progress(output)
        of = {name: [status for n, status, _ in progress if n == name] for name in state_names()}
        for name, statuses in of.items():
            assert statuses[0] == "LOADING", name
            assert statuses[-2:] == ["STARTING", "SERVING"], name
        # A service starts only once every service it depends on serves; while it waits, it
        # names those (and only those) it still waits for.
        at = {(n, status): i for i, (n, status, _) in enumerate(progress)}
        for name in state_names():
            depends = catalog.entry(name).load().depends_on
            for other in depends:
                assert at[(other, "SERVING")] < at[(name, "STARTING")], (name, other)
            for n, status, detail in progress:
                if (n, status) == (name, "WAITING"):
                    assert set(detail.removeprefix("on ").split(", ")) <= set(depends), detail
        state = json.loads((tmp_path / ".qtmesh/mesh.json").read_text())
        address = state["market"]["address"]
        child = state["market"]["pid"]
        assert asyncio.run(check_health(address)) == "SERVING"
        # Every service serves its metrics, on a port planned with the others.
        metrics = {name: entry["metrics"] for name, entry in state.items()}
        assert set(metrics) == set(state_names())
        assert metrics["market"] in output
        with urllib.request.urlopen(f"http://{metrics['market']}/metrics", timeout=10) as page:
            assert "grpc_server_handled_total" in page.read().decode()
        # The console reports its web endpoint (any free port, as the mesh's are ephemeral).
        web = state["console"]["endpoints"]["http"]
        assert web in output
        assert httpx.get(f"{web}/api/health", timeout=10).json()["status"] == "SERVING"
        assert "endpoints" not in state["market"]
        # Planned with every other port, so no service's port is ever handed to another.
        ports = [int(s["address"].rsplit(":", 1)[1]) for s in state.values()]
        ports += [int(m.rsplit(":", 1)[1]) for m in metrics.values()]
        ports.append(int(web.rsplit(":", 1)[1]))
        assert len(set(ports)) == len(ports)

        status = subprocess.run(
            [sys.executable, "-m", "qtmesh", "status"],
            cwd=tmp_path,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert "SERVING" in status.stdout
        assert address in status.stdout

        plan = asyncio.run(_generate_plan(state["federation"]["address"]))
        _watch_twice(tmp_path, f"last plan #{plan.sequence}, ")

        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=15)
        assert process.returncode == 0, rest
        assert "market (exit 0)" in rest
        assert _wait_for_exit_of(child, timeout=0), "the service outlived qtmesh up"
        assert not (tmp_path / ".qtmesh/mesh.json").exists()
        log = (tmp_path / ".qtmesh/logs/market.log").read_text()
        assert '"event": "stopped"' in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def state_names() -> list[str]:
    return [
        "market", "sesa", "meta", "memory", "world-model", "alpha-reporting", "meta-optimizer",
        "risk", "ceo", "strategy", "federation", "console",
    ]  # fmt: skip


async def _generate_plan(address: str) -> Plan:
    async with open_channel(address) as channel:
        return await FederationClient(channel).generate_plan()


def _watch_twice(cwd: Path, plan: str) -> None:
    """`qtmesh status --watch` without a terminal: a snapshot per interval, rates from the
    second on, the last plan below each; Ctrl-C ends it."""
    watch = subprocess.Popen(
        [sys.executable, "-m", "qtmesh", "status", "--watch", "--interval", "0.2"],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seen, snapshots = [], 0
        for line in watch.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if "last plan" in line:  # the caption, below each snapshot's table
                snapshots += 1
                if snapshots == 2:
                    break
        text = "".join(seen)
        assert snapshots == 2, text
        assert text.count(plan) == 2, text
        first, second = text.split("last plan", 1)
        row = next(line for line in second.splitlines() if line.startswith("│ market "))
        cells = [cell.strip() for cell in row.strip("│").split("│")]
        assert cells[:2] == ["market", "SERVING"]
        assert float(cells[3]) >= 0  # calls/s
        assert float(cells[4]) >= 0  # errors/s
        first_row = next(line for line in first.splitlines() if line.startswith("│ market "))
        assert [c.strip() for c in first_row.strip("│").split("│")][3] == "-"  # one scrape only
        watch.send_signal(signal.SIGINT)
        watch.communicate(timeout=15)
        assert watch.returncode == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()


def test_up_without_metrics_and_a_childs_warning_about_the_environment(tmp_path: Path):
    env = {**ENV, "QTMESH_MARKET_SEEDD": "3"}
    process = _start_up(tmp_path, "--no-metrics", "market", env=env)
    try:
        output = _wait_for_table(process)
        state = json.loads((tmp_path / ".qtmesh/mesh.json").read_text())
        assert list(state) == ["market"]
        assert "metrics" not in state["market"]
        row = next(line for line in output.splitlines() if line.startswith("│ market "))
        assert [c.strip() for c in row.strip("│").split("│")][3] == "-"
        # The market judged its own variables; `up` printed its warning once.
        warning = "QTMESH_MARKET_SEEDD is not a setting; did you mean QTMESH_MARKET_SEED?"
        assert output.count(warning) == 1
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_services_die_with_a_killed_supervisor(tmp_path: Path):
    process = _start_up(tmp_path)
    try:
        _wait_for_table(process)
        child = json.loads((tmp_path / ".qtmesh/mesh.json").read_text())["market"]["pid"]
        process.kill()
        process.wait()
        assert _wait_for_exit_of(child, timeout=10), "the service was orphaned"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_status_reports_unreachable_services(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "qtmesh", "status", "--timeout", "0.5"],
        cwd=tmp_path,
        env={**ENV, "QTMESH_ADDRESSES": "market=127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "UNREACHABLE" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "market", "--port", "70000"], "port: must be in 0..65535"),
        (["serve", "market", "--replay-start", "0"], "replay_start: must be in (0, 1]"),
        (["serve", "nowhere"], "invalid choice: 'nowhere'"),
        (["up", "nowhere"], "qtmesh: unknown service 'nowhere'; known services: "),
    ],
)
def test_bad_configuration_stops_start_up_with_a_clear_message(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "qtmesh", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_an_unknown_variable_is_a_warning_naming_the_closest_setting():
    env = {**ENV, "QTMESH_MARKET_SEEDD": "3", "QTMESH_NOTHING_LIKE_IT": "1"}
    env["QTMESH_METAOPT_DATA_DIR"] = "/tmp/x"  # a former name is still read: no warning
    listed = subprocess.run(
        [sys.executable, "-m", "qtmesh", "services"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0
    assert listed.stderr.splitlines() == [
        "qtmesh: warning: QTMESH_MARKET_SEEDD is not a setting; did you mean QTMESH_MARKET_SEED?",
        "qtmesh: warning: QTMESH_NOTHING_LIKE_IT is not a setting "
        "(docs/configuration.md lists them)",
    ]
    assert unknown_variables({"QTMESH_ADDRESSES": "", "QTMESH_SUPERVISOR_PID": "1"}) == []
    # A service's process judges its own variables and the shared ones, not another service's:
    # the longest prefix tells whose a variable is.
    environ = {"QTMESH_MARKET_SEEDD": "", "QTMESH_META_OPTIMIZER_X": "", "QTMESH_PORTT": ""}
    assert unknown_variables({**environ, "QTMESH_META_SEEDD": ""}, service="meta") == [
        ("QTMESH_META_SEEDD", "QTMESH_META_DATA_DIR"),
        ("QTMESH_PORTT", "QTMESH_PORT"),
    ]
    assert [v for v, _ in unknown_variables(environ, service="meta-optimizer")] == [
        "QTMESH_META_OPTIMIZER_X",
        "QTMESH_PORTT",
    ]
