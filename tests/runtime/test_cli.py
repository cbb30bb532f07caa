"""The qtmesh command in subprocesses: up/status/stop, no orphans, start-up errors."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from qtmesh.runtime.settings import unknown_variables
from qtmesh.runtime.supervisor import check_health

ENV = {**os.environ, "QTMESH_LOG_FORMAT": "json"}


def _start_up(cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qtmesh", "up", "--ephemeral-ports"],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


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
        state = json.loads((tmp_path / ".qtmesh/mesh.json").read_text())
        address = state["market"]["address"]
        child = state["market"]["pid"]
        assert asyncio.run(check_health(address)) == "SERVING"
        # The console reports its web endpoint (any free port, as the mesh's are ephemeral).
        web = state["console"]["endpoints"]["http"]
        assert web in output
        assert httpx.get(f"{web}/api/health", timeout=10).json()["status"] == "SERVING"
        assert "endpoints" not in state["market"]
        # Planned with every other port, so no service's port is ever handed to another.
        ports = [int(s["address"].rsplit(":", 1)[1]) for s in state.values()]
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
