"""The runtime owns the wiring: the clients an App declares are opened for its build and closed at
shutdown, its depends_on follows from them (but for the clients it only follows), and every mesh
channel carries request ids, default deadlines and error mapping for the mesh's clients."""

from __future__ import annotations

import asyncio
import dataclasses
import functools

import grpc
import pytest

from qtmesh.api.agent.v1 import agent_pb2, agent_pb2_grpc
from qtmesh.base.contract import Action, AgentContext, ExecutionResult, Recommendation
from qtmesh.base.errors import DeadlineExceeded, InvalidArgument
from qtmesh.runtime.agent_service import AgentClient, agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.channels import ChannelConfig, open_channel
from qtmesh.runtime.interceptors import REQUEST_ID
from qtmesh.runtime.server import Service
from qtmesh.runtime.status import mesh_stub
from qtmesh.runtime.supervisor import parse_ready_line, ready_line
from qtmesh.testing import serving, serving_app
from tests.helpers.agents import ScriptedAgent
from tests.helpers.agents import agent_service as scripted_service


@dataclasses.dataclass(frozen=True, kw_only=True)
class RelayConfig:
    pass


class Relay:
    """An agent that answers with what the agent behind it answers."""

    name = "relay"

    def __init__(self, behind: AgentClient) -> None:
        self.behind = behind

    async def recommend(self, context: AgentContext) -> list[Recommendation]:
        return await self.behind.recommend(context)

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        raise NotImplementedError


class Recorder(agent_pb2_grpc.AgentServiceServicer):
    """Records the request id of every Recommend it serves."""

    def __init__(self) -> None:
        self.request_ids: list[str | None] = []

    async def Recommend(self, request, context):
        metadata = dict(context.invocation_metadata() or ())
        self.request_ids.append(metadata.get(REQUEST_ID))
        return agent_pb2.RecommendResponse(agent="recorder")


def relay_app(
    *, take: str = "peer", uses: tuple[Uses, ...] | None = None, built: list[Relay] | None = None
) -> App[RelayConfig]:
    """An App whose build takes the client of ``take``; what it builds is appended to ``built``."""
    built = [] if built is None else built

    async def build(ctx: Context[RelayConfig]) -> Built:
        relay = Relay(ctx.client(take, AgentClient))
        built.append(relay)
        return Built(services=[agent_service(relay)])

    return App(
        name="relay",
        summary="relays Recommend",
        config_type=RelayConfig,
        env_prefix="QTMESH_RELAY_",
        build=build,
        uses=uses
        if uses is not None
        else (Uses(service="peer", client=functools.partial(AgentClient, name="peer")),),
    )


def recorder_service(recorder: Recorder) -> Service:
    return Service.of(
        recorder,
        agent_pb2_grpc.add_AgentServiceServicer_to_server,
        agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
    )


async def test_the_declared_clients_are_opened_for_build_and_closed_at_shutdown():
    recorder = Recorder()
    async with serving([recorder_service(recorder)]) as peer:
        built: list[Relay] = []
        app = relay_app(built=built)
        assert app.depends_on == ("peer",)
        channels = ChannelConfig(addresses={"peer": peer.address})
        async with serving_app(app, RelayConfig(), channel_config=channels) as relay:
            client = AgentClient(relay.channel, name="relay")
            assert await client.recommend(AgentContext(cycle_id="c")) == []
            (made,) = built
        assert len(recorder.request_ids) == 1
        # The server stopped, and with it the channel its build was given.
        with pytest.raises(grpc.aio.UsageError):
            await made.behind.recommend(AgentContext(cycle_id="after"))


async def test_a_followed_client_is_opened_and_closed_but_is_no_start_order_dependency():
    recorder = Recorder()
    followed: list[AgentClient] = []

    async def build(ctx: Context[RelayConfig]) -> Built:
        relay = Relay(ctx.client("peer", AgentClient))
        followed.append(ctx.client("upstream", AgentClient))
        return Built(services=[agent_service(relay)])

    app = App(
        name="relay",
        summary="relays Recommend and follows an upstream that may start after it",
        config_type=RelayConfig,
        env_prefix="QTMESH_RELAY_",
        build=build,
        uses=(
            Uses(service="peer", client=functools.partial(AgentClient, name="peer")),
            Uses(
                service="upstream",
                client=functools.partial(AgentClient, name="upstream"),
                followed=True,
            ),
        ),
    )
    assert app.depends_on == ("peer",)
    assert app.calls == ("peer", "upstream")
    async with serving([recorder_service(recorder)]) as peer:
        # Nothing serves upstream yet: the relay builds and serves all the same.
        channels = ChannelConfig(addresses={"peer": peer.address, "upstream": "127.0.0.1:1"})
        async with serving_app(app, RelayConfig(), channel_config=channels) as relay:
            client = AgentClient(relay.channel, name="relay")
            assert await client.recommend(AgentContext(cycle_id="c")) == []
        (upstream,) = followed
        with pytest.raises(grpc.aio.UsageError):
            await upstream.recommend(AgentContext(cycle_id="after"))


async def test_a_build_that_takes_an_undeclared_client_or_leaves_a_declared_one_fails():
    channels = ChannelConfig(addresses={"peer": "127.0.0.1:1", "other": "127.0.0.1:1"})
    with pytest.raises(LookupError, match="no AgentClient for 'other' is declared"):
        async with serving_app(relay_app(take="other"), RelayConfig(), channel_config=channels):
            pass
    unused = (
        Uses(service="peer", client=functools.partial(AgentClient, name="peer")),
        Uses(service="other", client=functools.partial(AgentClient, name="other")),
    )
    with pytest.raises(LookupError, match=r"never takes: other \(AgentClient\)"):
        async with serving_app(relay_app(uses=unused), RelayConfig(), channel_config=channels):
            pass


async def test_a_call_made_while_serving_one_carries_its_request_id_to_the_next_hop():
    recorder = Recorder()
    async with serving([recorder_service(recorder)]) as peer:
        channels = ChannelConfig(addresses={"peer": peer.address})
        async with serving_app(relay_app(), RelayConfig(), channel_config=channels) as relay:
            stub = agent_pb2_grpc.AgentServiceStub(relay.channel)
            request = agent_pb2.RecommendRequest(context=agent_pb2.AgentContext(cycle_id="c"))
            await stub.Recommend(request, metadata=((REQUEST_ID, "req-99"),))
            await stub.Recommend(request)
    first, second = recorder.request_ids
    assert first == "req-99"
    # Without one from the caller, the relay's server made an id, and the next hop got it.
    assert second is not None
    assert second != "req-99"


async def test_a_channel_gives_calls_with_one_response_its_default_deadline():
    scripted = ScriptedAgent()
    async with serving([scripted_service(scripted)]) as running:
        channel = open_channel(running.address, timeout=0.2)
        try:
            client = AgentClient(channel, name="scripted")
            with pytest.raises(DeadlineExceeded):
                await client.recommend(AgentContext(cycle_id="c", hints={"behavior": "block"}))
            await asyncio.wait_for(scripted.cancelled.wait(), timeout=10)
        finally:
            await channel.close()


async def test_mesh_clients_raise_mesh_errors_while_a_plain_stub_sees_the_status():
    scripted = ScriptedAgent()
    context = agent_pb2.AgentContext(cycle_id="c", hints={"behavior": "invalid"})
    async with serving([scripted_service(scripted)]) as running:
        mapped = mesh_stub(agent_pb2_grpc.AgentServiceStub, running.channel)
        with pytest.raises(InvalidArgument) as error:
            await mapped.Recommend(agent_pb2.RecommendRequest(context=context))
        assert error.value.field == "context.hints[behavior]"
        plain = agent_pb2_grpc.AgentServiceStub(running.channel)
        with pytest.raises(grpc.aio.AioRpcError) as status:
            await plain.Recommend(agent_pb2.RecommendRequest(context=context))
        assert status.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_app_spells_its_environment_prefix_after_its_name():
    with pytest.raises(ValueError, match="not 'QTMESH_RELAY_'"):
        dataclasses.replace(relay_app(), env_prefix="QTMESH_RELAYS_")


def test_a_ready_line_carries_the_address_and_any_other_endpoints():
    assert ready_line("127.0.0.1:5", {}) == "127.0.0.1:5\n"
    line = ready_line("[::1]:5", {"http": "http://[::1]:8090"})
    assert parse_ready_line(line) == ("[::1]:5", {"http": "http://[::1]:8090"})
    assert parse_ready_line("127.0.0.1:5\n") == ("127.0.0.1:5", {})
    assert parse_ready_line("") == ("", {})  # the child died before it was ready
