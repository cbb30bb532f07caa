"""Server reflection v1 and v1alpha over a real server (qtmesh/runtime/reflection.py)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_pb2_grpc

from qtmesh.api.grpc.reflection.v1 import reflection_pb2 as v1_pb2
from qtmesh.api.grpc.reflection.v1 import reflection_pb2_grpc as v1_pb2_grpc
from qtmesh.testing import serving
from tests.helpers.agents import agent_service

AGENT = "qtmesh.api.agent.v1.AgentService"
EVERY_SERVICE = {
    AGENT,
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


async def _ask(stub: Any, requests: list[Any]) -> list[Any]:
    async def stream():
        for request in requests:
            yield request

    return [response async for response in stub.ServerReflectionInfo(stream())]


def _files(response: Any) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = {}
    for raw in response.file_descriptor_response.file_descriptor_proto:
        file = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files[file.name] = file
    return files


async def test_v1_lists_every_service_and_resolves_symbols(scripted_agent):
    async with serving([agent_service(scripted_agent)]) as running:
        stub = v1_pb2_grpc.ServerReflectionStub(running.channel)
        listed, agent, own, missing = await _ask(
            stub,
            [
                v1_pb2.ServerReflectionRequest(list_services=""),
                v1_pb2.ServerReflectionRequest(file_containing_symbol=AGENT),
                v1_pb2.ServerReflectionRequest(
                    file_containing_symbol="grpc.reflection.v1.ServerReflection"
                ),
                v1_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Service"),
            ],
        )
    assert isinstance(listed, v1_pb2.ServerReflectionResponse)
    assert {s.name for s in listed.list_services_response.service} == EVERY_SERVICE
    assert listed.original_request.list_services == ""

    files = _files(agent)
    hosting = [f for f in files.values() if f.package == "qtmesh.api.agent.v1"]
    assert [s.name for f in hosting for s in f.service] == ["AgentService"]
    assert agent.original_request.file_containing_symbol == AGENT

    reflection_file = _files(own)["grpc/reflection/v1/reflection.proto"]
    assert reflection_file.package == "grpc.reflection.v1"
    assert [s.name for s in reflection_file.service] == ["ServerReflection"]

    assert missing.WhichOneof("message_response") == "error_response"
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_v1alpha_still_lists_and_resolves(scripted_agent):
    async with serving([agent_service(scripted_agent)]) as running:
        stub = v1alpha_pb2_grpc.ServerReflectionStub(running.channel)
        listed, agent = await _ask(
            stub,
            [
                v1alpha_pb2.ServerReflectionRequest(list_services=""),
                v1alpha_pb2.ServerReflectionRequest(file_containing_symbol=AGENT),
            ],
        )
    assert {s.name for s in listed.list_services_response.service} == EVERY_SERVICE
    assert any(f.package == "qtmesh.api.agent.v1" for f in _files(agent).values())


def test_v1_and_v1alpha_messages_are_wire_identical():
    """What lets v1 reuse v1alpha's servicer: every message has the same fields and numbers."""

    def messages(file: Any, package: str) -> dict[str, set[tuple[Any, ...]]]:
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        assert proto.package == package
        return {
            message.name: {
                (f.name, f.number, f.type, f.label, f.type_name.removeprefix(f".{package}."))
                for f in message.field
            }
            for message in proto.message_type
        }

    v1 = messages(v1_pb2.DESCRIPTOR, "grpc.reflection.v1")
    assert len(v1) == 8
    assert v1 == messages(v1alpha_pb2.DESCRIPTOR, "grpc.reflection.v1alpha")
