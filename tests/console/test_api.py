"""The console's HTTP/JSON API over real servers on port 0: alpha-reporting, a federation asking
the meta optimizer, the meta optimizer following it, and the console in front of them. Reads
page and keep the services' own errors; actions need the operator token; the event streams
resume after the Last-Event-ID exactly once."""

from __future__ import annotations

import contextlib
import json
import ssl

import httpx
import pytest

from console.config import ConsoleConfig
from console.service import APP as console_app
from qtmesh.base.config import ConfigError, Secret
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.server import ServerConfig
from qtmesh.testing import make_certificates, serving_app
from tests.helpers.meta_optimizer import Progress, optimizer, plan, world

TOKEN = "operator-secret"


@contextlib.asynccontextmanager
async def console(w, optimizer_address: str, **settings):
    channels = ChannelConfig(
        addresses={"federation": w.federation_address, "meta-optimizer": optimizer_address}
    )
    config = ConsoleConfig(**{"http_port": 0, "operator_token": Secret(TOKEN), **settings})
    async with (
        serving_app(console_app, config, channel_config=channels) as running,
        httpx.AsyncClient(base_url=running.server.endpoints["http"], timeout=10.0) as http,
    ):
        yield http


async def events(http: httpx.AsyncClient, path: str, count: int, **headers) -> list[dict]:
    """The first ``count`` server-sent events of ``path``: id, event and decoded data."""
    found: list[dict] = []
    async with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict = {}
        async for line in response.aiter_lines():
            if not line:
                if "data" in event:
                    found.append(event)
                    if len(found) == count:
                        return found
                event = {}
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[field] = json.loads(value) if field == "data" else value
    return found


async def test_the_api_reads_plans_proposals_and_the_ledger(tmp_path):
    progress = Progress()
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, progress) as (client, running),
        console(w, running.address) as http,
    ):
        cycle = await client.run_cycle()
        made, last = await plan(w.federation)
        await progress.reach(last)

        recent = (await http.get("/api/plans")).json()
        assert [p["sequence"] for p in recent["plans"]] == [made.sequence]
        assert recent["resume_after"] == made.sequence
        actions = recent["plans"][0]["actions"]
        assert {a["status"] for a in actions} == {"COMPLETED"}
        assert {a["action_type"] for a in actions} >= {"ADJUST_EXPOSURE"}
        assert (await http.get(f"/api/plans/{made.sequence}")).json()["id"] == made.id

        pulse = (await http.get("/api/pulse")).json()
        assert pulse["last_cycle"]["id"] == cycle.id
        assert pulse["last_cycle"]["reports_audited"] == cycle.reports_audited
        sectors = {s["sector"]: s for s in pulse["last_cycle"]["sectors"]}
        assert sectors["Tech"]["alpha_t_stat"] == pytest.approx(cycle.sectors[0].alpha_t_stat)

        first = (await http.get("/api/proposals", params={"page_size": 2})).json()
        assert [p["ledger_index"] for p in first["proposals"]] == [0, 1]
        rest = await http.get("/api/proposals", params={"page_token": first["next_page_token"]})
        assert [p["ledger_index"] for p in rest.json()["proposals"]] == [2]
        assert rest.json()["next_page_token"] == ""
        applied = (await http.get("/api/proposals", params={"state": "APPLIED"})).json()
        assert {p["state"] for p in applied["proposals"]} == {"APPLIED"}
        verification = (await http.get("/api/ledger/verification")).json()
        assert verification["intact"]
        assert verification["first_bad_index"] == -1

        schema = (await http.get("/openapi.json")).json()
        assert {"/api/plans", "/api/plans/events", "/api/proposals", "/api/pulse"} <= set(
            schema["paths"]
        )


async def test_bad_input_is_refused_naming_what_is_wrong(tmp_path):
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, Progress()) as (_client, running),
        console(w, running.address) as http,
    ):
        refused = await http.get("/api/proposals", params={"page_size": 0})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["query", "page_size"]
        assert (await http.get("/api/proposals", params={"state": "DONE"})).status_code == 422
        missing = await http.get("/api/plans/999")
        assert missing.status_code == 404
        assert missing.json()["code"] == "NOT_FOUND"
        bad_token = await http.get("/api/proposals", params={"page_token": "not-a-token"})
        assert bad_token.status_code == 400
        assert bad_token.json()["field"]
        resumed = await http.get("/api/plans/events", headers={"Last-Event-ID": "x1"})
        assert resumed.status_code == 400
        assert resumed.json()["field"] == "Last-Event-ID"


async def test_actions_need_the_operator_token(tmp_path):
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, Progress()) as (_client, running),
    ):
        async with console(w, running.address) as http:
            assert (await http.post("/api/cycles")).status_code == 401
            wrong = {"Authorization": "Bearer guess"}
            assert (await http.post("/api/plans", headers=wrong)).status_code == 401
            right = {"Authorization": f"Bearer {TOKEN}"}
            cycle = await http.post("/api/cycles", headers=right)
            assert cycle.status_code == 200
            assert len(cycle.json()["proposals"]) == 3
            made = await http.post("/api/plans", headers=right)
            assert made.status_code == 200
            assert made.json()["sequence"] >= 1
        async with console(w, running.address, operator_token=None) as read_only:
            refused = await read_only.post("/api/plans", headers=right)
            assert refused.status_code == 403
            assert "read-only" in refused.json()["detail"]
            assert (await read_only.get("/api/health")).json() == {
                "status": "SERVING",
                "actions": False,
            }


async def test_event_streams_resume_after_the_last_event_exactly_once(tmp_path):
    progress = Progress()
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, progress) as (client, running),
        console(w, running.address) as http,
    ):
        await client.run_cycle()
        first, last = await plan(w.federation)
        second, last = await plan(w.federation)
        await progress.reach(last)
        every = await events(http, "/api/plans/events?after=0", last)
        assert [int(e["id"]) for e in every] == list(range(1, last + 1))
        assert [e["data"]["sequence"] for e in every if e["event"] == "plan"] == [
            first.sequence,
            second.sequence,
        ]
        statuses = [e["data"] for e in every if e["event"] == "status"]
        assert {s["status"] for s in statuses} == {"EXECUTING", "COMPLETED"}
        # The browser resumes with Last-Event-ID, which wins over the query's after.
        middle = int(every[3]["id"])
        resumed = await events(
            http, "/api/plans/events?after=0", last - middle, **{"Last-Event-ID": str(middle)}
        )
        assert [int(e["id"]) for e in resumed] == list(range(middle + 1, last + 1))

        ledger = await events(http, "/api/ledger/events?after=0", 5)
        assert [e["event"] for e in ledger[:4]] == ["proposal", "proposal", "proposal", "cycle"]
        assert ledger[4]["event"] == "transition"
        assert [int(e["id"]) for e in ledger] == [1, 2, 3, 4, 5]


async def test_the_web_is_served_with_the_mesh_servers_own_tls(tmp_path):
    certs = make_certificates(tmp_path / "tls")
    tls = ServerConfig(
        port=0,
        grace_seconds=1.0,
        tls_cert_file=certs.server_cert,
        tls_key_file=certs.server_key,
    )
    async with serving_app(console_app, ConsoleConfig(http_port=0), server_config=tls) as running:
        url = running.server.endpoints["http"]
        assert url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=certs.ca)) as http:
            health = await http.get(f"{url}/api/health")
        assert health.json()["status"] == "SERVING"
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.ConnectError):  # not a certificate the system trusts
                await plain.get(f"{url}/api/health")


async def test_reads_need_a_token_when_the_mesh_servers_do(tmp_path):
    guarded = ServerConfig(port=0, grace_seconds=1.0, auth_tokens=Secret("browser:s3cret"))
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, Progress()) as (_client, running),
    ):
        channels = ChannelConfig(
            addresses={"federation": w.federation_address, "meta-optimizer": running.address}
        )
        async with serving_app(
            console_app, ConsoleConfig(http_port=0), server_config=guarded, channel_config=channels
        ) as console_server:
            url = console_server.server.endpoints["http"]
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                assert (await http.get("/api/health")).status_code == 200
                refused = await http.get("/api/plans")
                assert refused.status_code == 401
                assert refused.json()["code"] == "UNAUTHENTICATED"
                wrong = await http.get("/api/plans", headers={"Authorization": "Bearer guess"})
                assert wrong.status_code == 401
                bearer = await http.get("/api/plans", headers={"Authorization": "Bearer s3cret"})
                assert bearer.status_code == 200
            async with httpx.AsyncClient(
                base_url=url, timeout=10, cookies={"qtmesh_token": "s3cret"}
            ) as with_cookie:
                session = await with_cookie.get("/api/session")
                assert session.json() == {"authorised": True, "token_required": True}
                # An action's header holds the operator token; the cookie still authorises it.
                action = await with_cookie.post(
                    "/api/plans", headers={"Authorization": "Bearer operator"}
                )
                assert action.status_code == 403  # read-only console: no operator token set
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                # A page is open to anyone: it holds no data until the API lets it read.
                assert (await http.get("/governance")).status_code == 200


async def test_a_web_port_in_use_is_a_configuration_error_naming_it():
    async with serving_app(console_app, ConsoleConfig(http_port=0)) as running:
        taken = int(running.server.endpoints["http"].rsplit(":", 1)[1])
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{taken}") as refused:
            async with serving_app(console_app, ConsoleConfig(http_port=taken)):
                pass
        assert refused.value.setting == "http_port"
