"""The shared server runtime over real servers on port 0: health, reflection, errors, deadlines,
limits, shutdown, TLS, mutual TLS and tokens."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from structlog.testing import capture_logs

from qtmesh.api.agent.v1 import agent_pb2, agent_pb2_grpc
from qtmesh.base.concurrency import CancelToken, run_cancellable
from qtmesh.base.config import ConfigError, Secret
from qtmesh.base.errors import InvalidArgument, NotFound, Unauthenticated
from qtmesh.runtime.channels import ChannelConfig, open_channel
from qtmesh.runtime.server import MeshServer, ServerConfig
from qtmesh.runtime.status import error_info, raising_mesh_errors
from qtmesh.testing import make_certificates, serving
from tests.helpers.agents import ScriptedAgent, agent_service

AGENT = "qtmesh.api.agent.v1.AgentService"


def _request(behavior: str = "echo", cycle: str = "c-1") -> agent_pb2.RecommendRequest:
    return agent_pb2.RecommendRequest(
        context=agent_pb2.AgentContext(cycle_id=cycle, hints={"behavior": behavior})
    )


async def test_health_reports_each_service_and_goes_not_serving_on_shutdown(scripted_agent):
    async with serving([agent_service(scripted_agent)]) as running:
        health = health_pb2_grpc.HealthStub(running.channel)
        for service in ("", AGENT):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        watch = health.Watch(health_pb2.HealthCheckRequest(service=AGENT))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.ensure_future(running.server.stop())
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        await stopping


async def test_reflection_lists_hosted_services(scripted_agent):
    async with serving([agent_service(scripted_agent)]) as running:
        stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)

        async def ask():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for response in stub.ServerReflectionInfo(ask()):
            names = {s.name for s in response.list_services_response.service}
            break
    assert {AGENT, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_domain_error_arrives_as_status_with_error_info(scripted_agent):
    async with serving([agent_service(scripted_agent)], name="agent") as running:
        stub = agent_pb2_grpc.AgentServiceStub(running.channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Recommend(_request("invalid"), metadata=(("x-request-id", "req-42"),))
        error = failure.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "context.hints[behavior]: is not a behaviour I accept"
        info = error_info(error)
        assert info is not None
        assert info.reason == "INVALID_FIELD"
        assert info.domain == "agent.qtmesh"
        assert info.metadata["field"] == "context.hints[behavior]"
        assert info.metadata["request_id"] == "req-42"

        # A client turns the status back into the same domain error.
        with pytest.raises(InvalidArgument) as mapped, raising_mesh_errors():
            await stub.Recommend(_request("invalid"))
        assert mapped.value.field == "context.hints[behavior]"
        with pytest.raises(NotFound), raising_mesh_errors():
            await stub.Recommend(_request("missing"))

        # The server keeps serving after errors.
        response = await stub.Recommend(_request("echo", cycle="after"))
        assert response.recommendations[0].rationale == "after"


async def test_unexpected_exception_is_internal_without_leaking_details(scripted_agent):
    async with serving([agent_service(scripted_agent)]) as running:
        stub = agent_pb2_grpc.AgentServiceStub(running.channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Recommend(_request("crash"), metadata=(("x-request-id", "req-7"),))
        assert failure.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in failure.value.details()
        assert "req-7" in failure.value.details()


async def test_a_body_that_does_not_parse_is_invalid_argument_and_logged(scripted_agent):
    async with serving([agent_service(scripted_agent)]) as running:
        recommend = running.channel.unary_unary(
            f"/{AGENT}/Recommend",
            request_serializer=lambda body: body,
            response_deserializer=agent_pb2.RecommendResponse.FromString,
        )
        merged = capture_logs(processors=[structlog.contextvars.merge_contextvars])
        with merged as logs, pytest.raises(grpc.aio.AioRpcError) as failure:
            # Field 1 (the context) as a length-delimited value that runs past the body's end.
            await recommend(b"\x0a\x7f\x01", metadata=(("x-request-id", "req-9"),))
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(failure.value).metadata["field"] == "request"
        assert "malformed 3-byte request body" in failure.value.details()
        assert not scripted_agent.started.is_set()
        [line] = [e for e in logs if e["event"] == "rpc"]
        assert line["log_level"] == "warning"
        assert line["code"] == "INVALID_ARGUMENT"
        assert line["method"] == f"/{AGENT}/Recommend"
        assert line["request_id"] == "req-9"
        response = await agent_pb2_grpc.AgentServiceStub(running.channel).Recommend(
            _request("echo", cycle="after")
        )
        assert response.recommendations[0].rationale == "after"


async def test_deadline_shorter_than_work_cancels_the_handler(scripted_agent):
    async with serving([agent_service(scripted_agent)]) as running:
        stub = agent_pb2_grpc.AgentServiceStub(running.channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Recommend(_request("block"), timeout=0.2)
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(scripted_agent.cancelled.wait(), timeout=10)


async def test_oversize_message_is_resource_exhausted(scripted_agent):
    config = ServerConfig(port=0, max_message_bytes=4096, grace_seconds=1.0)
    async with serving([agent_service(scripted_agent)], server_config=config) as running:
        stub = agent_pb2_grpc.AgentServiceStub(running.channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Recommend(_request("echo", cycle="x" * 10_000))
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not scripted_agent.started.is_set()
        response = await stub.Recommend(_request("echo", cycle="small"))
        assert response.recommendations[0].rationale == "small"


async def test_shutdown_lets_in_flight_calls_finish_within_grace(scripted_agent):
    config = ServerConfig(port=0, grace_seconds=30.0)
    async with serving([agent_service(scripted_agent)], server_config=config) as running:
        stub = agent_pb2_grpc.AgentServiceStub(running.channel)
        call = asyncio.ensure_future(stub.Recommend(_request("gate", cycle="in-flight")))
        await scripted_agent.started.wait()
        watch = health_pb2_grpc.HealthStub(running.channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.ensure_future(running.server.stop())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        # Shutdown has begun and waits for the in-flight call instead of cancelling it.
        assert not call.done()
        assert not stopping.done()
        scripted_agent.release.set()
        response = await call
        assert response.recommendations[0].rationale == "in-flight"
        await stopping


async def test_tls_and_mutual_tls(tmp_path: Path, scripted_agent):
    certs = make_certificates(tmp_path)
    tls = ServerConfig(
        port=0, grace_seconds=1.0, tls_cert_file=certs.server_cert, tls_key_file=certs.server_key
    )
    trusted = ChannelConfig(tls_ca_file=certs.ca, tls_server_name="localhost")
    async with serving(
        [agent_service(scripted_agent)], server_config=tls, channel_config=trusted
    ) as running:
        stub = agent_pb2_grpc.AgentServiceStub(running.channel)
        assert (await stub.Recommend(_request())).agent == "scripted"
        async with grpc.aio.insecure_channel(running.address) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await agent_pb2_grpc.AgentServiceStub(plaintext).Recommend(_request(), timeout=5)
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE

    mutual = dataclasses.replace(tls, tls_client_ca_file=certs.ca)
    with_cert = dataclasses.replace(
        trusted, tls_cert_file=certs.client_cert, tls_key_file=certs.client_key
    )
    async with serving(
        [agent_service(scripted_agent)], server_config=mutual, channel_config=with_cert
    ) as running:
        stub = agent_pb2_grpc.AgentServiceStub(running.channel)
        assert (await stub.Recommend(_request())).agent == "scripted"
        from qtmesh.runtime.channels import open_channel

        async with open_channel(running.address, trusted) as no_cert:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await agent_pb2_grpc.AgentServiceStub(no_cert).Recommend(_request(), timeout=5)
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_port_serves_only_health_in_plaintext_while_the_main_port_needs_mtls(
    tmp_path: Path, scripted_agent
):
    certs = make_certificates(tmp_path)
    config = ServerConfig(
        port=0,
        health_port=0,
        grace_seconds=1.0,
        tls_cert_file=certs.server_cert,
        tls_key_file=certs.server_key,
        tls_client_ca_file=certs.ca,
    )
    mutual = ChannelConfig(
        tls_ca_file=certs.ca,
        tls_server_name="localhost",
        tls_cert_file=certs.client_cert,
        tls_key_file=certs.client_key,
    )
    async with serving(
        [agent_service(scripted_agent)], server_config=config, channel_config=mutual
    ) as running:
        assert running.server.health_address not in ("", running.address)
        assert (await agent_pb2_grpc.AgentServiceStub(running.channel).Recommend(_request())).agent
        async with grpc.aio.insecure_channel(running.address) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(plaintext).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        async with grpc.aio.insecure_channel(running.server.health_address) as probe:
            health = health_pb2_grpc.HealthStub(probe)
            for service in ("", AGENT):
                response = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert response.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as other:
                await agent_pb2_grpc.AgentServiceStub(probe).Recommend(_request(), timeout=5)
            assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED

            watch = health.Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            stopping = asyncio.ensure_future(running.server.stop())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
            await stopping
            # It stopped with the main server.
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert gone.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_health_port_that_cannot_be_bound_stops_start_up(scripted_agent):
    async with serving([agent_service(scripted_agent)]) as running:
        taken = int(running.address.rpartition(":")[2])
        server = MeshServer(
            name="second",
            services=[agent_service(scripted_agent)],
            config=ServerConfig(port=0, health_port=taken, grace_seconds=1.0),
        )
        with pytest.raises(ConfigError, match="health_port: cannot listen on"):
            await server.start()
        await server.stop()


async def test_clients_balance_round_robin_over_every_address_a_name_resolves_to():
    # A headless Service resolves to one address per replica; a static list stands in for it.
    first, second = ScriptedAgent(), ScriptedAgent()
    async with (
        serving([agent_service(first)]) as one,
        serving([agent_service(second)]) as two,
    ):
        target = f"ipv4:{one.address},{two.address}"
        async with open_channel(target, ChannelConfig()) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            for _ in range(100):
                await stub.Recommend(_request(), wait_for_ready=True)
                if first.started.is_set() and second.started.is_set():
                    break
        assert first.started.is_set()
        assert second.started.is_set()


def test_servers_age_connections_out_so_clients_re_resolve():
    options = dict(ServerConfig(max_connection_age_seconds=300, grace_seconds=20).grpc_options())
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 20_000
    assert "grpc.max_connection_age_ms" not in dict(ServerConfig().grpc_options())


async def test_bearer_tokens_are_required_except_for_health(scripted_agent):
    config = ServerConfig(port=0, grace_seconds=1.0, auth_tokens=Secret("federation:s3cret"))
    async with serving([agent_service(scripted_agent)], server_config=config) as running:
        from qtmesh.runtime.channels import open_channel

        anonymous = agent_pb2_grpc.AgentServiceStub(running.channel)
        with pytest.raises(Unauthenticated), raising_mesh_errors():
            await anonymous.Recommend(_request())
        health = health_pb2_grpc.HealthStub(running.channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == 1

        async with open_channel(running.address, ChannelConfig(auth_token=Secret("wrong"))) as bad:
            with pytest.raises(Unauthenticated), raising_mesh_errors():
                await agent_pb2_grpc.AgentServiceStub(bad).Recommend(_request())
        async with open_channel(running.address, ChannelConfig(auth_token=Secret("s3cret"))) as ok:
            response = await agent_pb2_grpc.AgentServiceStub(ok).Recommend(_request())
            assert response.agent == "scripted"
        assert not scripted_agent.cancelled.is_set()


async def test_cancelled_off_loop_work_stops_its_thread():
    started = threading.Event()
    stopped = threading.Event()

    def work(token: CancelToken) -> int:
        started.set()
        try:
            while True:
                token.raise_if_cancelled()
                time.sleep(0.001)  # stands for one chunk of numpy work
        finally:
            stopped.set()

    task = asyncio.ensure_future(run_cancellable(work))
    await asyncio.to_thread(started.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set(), "the worker must have stopped before the cancellation completed"
    assert await run_cancellable(lambda token: 41 + 1) == 42


async def test_a_bound_token_works_only_with_the_certificate_of_its_client(
    tmp_path: Path, scripted_agent
):
    certs = make_certificates(tmp_path, clients=("federation", "intruder"))
    config = ServerConfig(
        port=0,
        grace_seconds=1.0,
        tls_cert_file=certs.server_cert,
        tls_key_file=certs.server_key,
        tls_client_ca_file=certs.ca,
        auth_tokens=Secret("federation:s3cret,intruder:other"),
        bind_tokens_to_certificates=True,
    )

    def as_client(name: str, token: str) -> ChannelConfig:
        cert, key = certs.clients[name]
        return ChannelConfig(
            tls_ca_file=certs.ca,
            tls_server_name="localhost",
            tls_cert_file=cert,
            tls_key_file=key,
            auth_token=Secret(token),
        )

    async with serving([agent_service(scripted_agent)], server_config=config) as running:
        async with open_channel(running.address, as_client("federation", "s3cret")) as own:
            stub = agent_pb2_grpc.AgentServiceStub(own)
            assert (await stub.Recommend(_request())).agent == "scripted"
        # The federation's token over another certificate the same CA signed is refused.
        async with open_channel(running.address, as_client("intruder", "s3cret")) as stolen:
            refused = pytest.raises(Unauthenticated, match="bound to a certificate")
            with refused, raising_mesh_errors():
                await agent_pb2_grpc.AgentServiceStub(stolen).Recommend(_request())
        async with open_channel(running.address, as_client("intruder", "other")) as theirs:
            assert (await agent_pb2_grpc.AgentServiceStub(theirs).Recommend(_request())).agent


def test_binding_tokens_needs_mutual_tls_and_tokens():
    with pytest.raises(ConfigError) as bad:
        ServerConfig(auth_tokens=Secret("a:b"), bind_tokens_to_certificates=True)
    assert bad.value.setting == "bind_tokens_to_certificates"
