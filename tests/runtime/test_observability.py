"""A server's observability over real sockets: its /metrics scrape (the grpc-ecosystem RPC
metrics, server and client side), the endpoint's settings, and the one log line per call with
its sampling."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from qtmesh.api.agent.v1 import agent_pb2, agent_pb2_grpc
from qtmesh.base.config import ConfigError
from qtmesh.runtime.app import App, Built
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.interceptors import request_scope, sampled
from qtmesh.runtime.metrics import Metrics
from qtmesh.runtime.server import MeshServer, ServerConfig, Service
from qtmesh.testing import serving, serving_app
from tests.helpers.agents import agent_service

AGENT = "qtmesh.api.agent.v1.AgentService"


def _request(behavior: str) -> agent_pb2.RecommendRequest:
    return agent_pb2.RecommendRequest(
        context=agent_pb2.AgentContext(cycle_id="c", hints={"behavior": behavior})
    )


def _scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _rpc(method: str, kind: str = "UNARY", **more: str) -> tuple[tuple[str, str], ...]:
    labels = {"grpc_service": AGENT, "grpc_method": method, "grpc_type": kind, **more}
    return tuple(sorted(labels.items()))


async def test_a_scrape_shows_each_call_started_handled_by_code_and_timed(scripted_agent):
    config = ServerConfig(port=0, metrics_port=0, grace_seconds=1.0)
    async with serving([agent_service(scripted_agent)], server_config=config) as running:
        stub = agent_pb2_grpc.AgentServiceStub(running.channel)
        for _ in range(3):
            await stub.Recommend(_request("echo"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Recommend(_request("invalid"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Recommend(_request("crash"))
        samples = await asyncio.to_thread(_scrape, running.server.endpoints["metrics"])
    assert samples[("grpc_server_started_total", _rpc("Recommend"))] == 5
    handled = "grpc_server_handled_total"
    assert samples[(handled, _rpc("Recommend", grpc_code="OK"))] == 3
    assert samples[(handled, _rpc("Recommend", grpc_code="InvalidArgument"))] == 1
    assert samples[(handled, _rpc("Recommend", grpc_code="Internal"))] == 1
    assert samples[("grpc_server_handling_seconds_count", _rpc("Recommend"))] == 5
    inf = _rpc("Recommend", le="+Inf")
    assert samples[("grpc_server_handling_seconds_bucket", inf)] == 5


async def test_client_side_metrics_count_one_response_calls_and_streams(scripted_agent):
    metrics = Metrics()
    async with (
        serving([agent_service(scripted_agent)]) as running,
        open_channel(running.address, metrics=metrics.client) as channel,
    ):
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        await stub.Recommend(_request("echo"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Recommend(_request("missing"))
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        await watch.read()
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch.read()
        await channel.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.text())
        for s in family.samples
    }
    handled = "grpc_client_handled_total"
    assert samples[("grpc_client_started_total", _rpc("Recommend"))] == 2
    assert samples[(handled, _rpc("Recommend", grpc_code="OK"))] == 1
    assert samples[(handled, _rpc("Recommend", grpc_code="NotFound"))] == 1
    watched = {
        "grpc_service": "grpc.health.v1.Health",
        "grpc_method": "Watch",
        "grpc_type": "SERVER_STREAM",
    }
    assert samples[("grpc_client_started_total", tuple(sorted(watched.items())))] == 1
    cancelled = tuple(sorted({**watched, "grpc_code": "Canceled"}.items()))
    assert samples[(handled, cancelled)] == 1


async def test_no_metrics_endpoint_unless_asked_and_a_taken_port_names_the_setting(
    scripted_agent,
):
    async with serving([agent_service(scripted_agent)]) as running:
        assert "metrics" not in running.server.endpoints
        taken = int(running.server.address.rsplit(":", 1)[1])
        server = MeshServer(
            name="agent",
            services=[agent_service(scripted_agent)],
            config=ServerConfig(port=0, metrics_port=taken),
        )
        with pytest.raises(ConfigError, match="metrics_port") as refused:
            await server.start()
        assert f"127.0.0.1:{taken}" in str(refused.value)
    with pytest.raises(ConfigError, match="metrics_port"):
        ServerConfig(port=50060, metrics_port=50060)
    with pytest.raises(ConfigError, match="log_sample_ratio"):
        ServerConfig(log_sample_ratio=1.5)
    with pytest.raises(ConfigError, match="otlp_endpoint"):
        ServerConfig(otlp_endpoint="collector:4317")


async def test_each_call_is_one_info_line_sampled_by_request_id_and_failures_always(
    scripted_agent,
):
    kept = next(f"req-{i}" for i in range(100) if sampled(f"req-{i}", 0.5))
    dropped = next(f"req-{i}" for i in range(100) if not sampled(f"req-{i}", 0.5))
    config = ServerConfig(port=0, grace_seconds=1.0, log_sample_ratio=0.5)
    merged = capture_logs(processors=[structlog.contextvars.merge_contextvars])
    with merged as logs:
        async with serving([agent_service(scripted_agent)], server_config=config) as running:
            stub = agent_pb2_grpc.AgentServiceStub(running.channel)
            for request_id in (kept, dropped):
                await stub.Recommend(_request("echo"), metadata=(("x-request-id", request_id),))
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Recommend(_request("invalid"), metadata=(("x-request-id", dropped),))
            await health_pb2_grpc.HealthStub(running.channel).Check(health_pb2.HealthCheckRequest())
    lines = [e for e in logs if e["event"] == "rpc"]
    ok = [e for e in lines if e["code"] == "OK" and e["method"].endswith("/Recommend")]
    assert [(e["request_id"], e["log_level"]) for e in ok] == [(kept, "info")]
    assert ok[0]["method"] == f"/{AGENT}/Recommend"
    assert ok[0]["elapsed_ms"] >= 0
    [failed] = [e for e in lines if e["code"] == "INVALID_ARGUMENT"]
    assert (failed["request_id"], failed["log_level"]) == (dropped, "warning")
    [probe] = [e for e in lines if e["method"].startswith("/grpc.health")]
    assert probe["log_level"] == "debug"


def test_the_sample_is_the_same_at_every_hop_and_near_its_ratio():
    ids = [f"{i:032x}" for i in range(4000)]
    assert [sampled(i, 0.25) for i in ids] == [sampled(i, 0.25) for i in ids]
    assert 0.22 < sum(sampled(i, 0.25) for i in ids) / len(ids) < 0.28
    assert all(sampled(i, 1.0) for i in ids[:10])
    assert not any(sampled(i, 0.0) for i in ids)


def test_a_request_scope_keeps_the_id_of_the_call_being_served():
    with request_scope() as outer, request_scope() as inner:
        assert inner == outer
    with request_scope() as other:
        assert other != outer


@dataclasses.dataclass(frozen=True)
class _NoSettings:
    pass


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OpenTelemetry collector's trace endpoint: keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = asyncio.Event()

    async def Export(self, request, context):
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_an_otlp_endpoint_exports_the_servers_spans_to_the_collector(scripted_agent):
    collector = _Collector()
    service = Service.of(
        collector,
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server,
        trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"],
    )

    async def build(_context):
        return Built(services=[agent_service(scripted_agent)])

    app = App(
        name="traced-agent",
        summary="an agent that traces",
        config_type=_NoSettings,
        env_prefix="QTMESH_TRACED_AGENT_",
        build=build,
    )
    async with serving([service], name="collector") as otel:
        config = ServerConfig(
            port=0, grace_seconds=1.0, otlp_endpoint=f"http://{otel.server.address}"
        )
        async with serving_app(app, server_config=config) as running:
            stub = agent_pb2_grpc.AgentServiceStub(running.channel)
            await stub.Recommend(_request("echo"))
        # Stopping the server flushed its spans to the collector.
        await asyncio.wait_for(collector.received.wait(), timeout=10)
    spans = [
        (resource.resource, span)
        for request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    [(resource, span)] = spans
    assert span.name == f"/{AGENT}/Recommend"
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "traced-agent"
