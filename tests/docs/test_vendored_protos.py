"""The vendored protos (protos/google/, protos/grpc/) cannot drift from their origin."""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path

import google.rpc
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
INSTALLED_RPC = Path(next(iter(google.rpc.__path__)))


def test_google_rpc_protos_equal_the_installed_googleapis_common_protos():
    vendored = sorted(p.name for p in (PROTOS / "google" / "rpc").glob("*.proto"))
    assert vendored == ["error_details.proto", "status.proto"]
    for name in vendored:
        installed = (INSTALLED_RPC / name).read_bytes()
        assert (PROTOS / "google" / "rpc" / name).read_bytes() == installed, name


def test_only_the_vendored_directories_are_outside_qtmesh():
    assert sorted(p.name for p in PROTOS.iterdir() if p.is_dir()) == ["google", "grpc", "qtmesh"]
    assert [str(p.relative_to(PROTOS)) for p in sorted((PROTOS / "grpc").rglob("*.proto"))] == [
        "grpc/health/v1/health.proto",
        "grpc/reflection/v1/reflection.proto",
    ]


def test_reflection_v1_is_the_upstream_text_of_v1alpha_under_package_v1():
    """The v1 file keeps the upstream text and Apache-2.0 header; its messages match v1alpha's
    (tests/runtime/test_reflection.py checks the descriptors field by field)."""
    text = (PROTOS / "grpc" / "reflection" / "v1" / "reflection.proto").read_text()
    assert "Licensed under the Apache License, Version 2.0" in text
    assert "\npackage grpc.reflection.v1;\n" in text
    assert "service ServerReflection {" in text


def test_versions_in_the_notes_match_what_is_installed():
    note = (PROTOS / "google" / "README.md").read_text()
    assert (
        f"googleapis-common-protos {importlib.metadata.version('googleapis-common-protos')}" in note
    )
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    pinned = next(line for line in constraints if line.startswith("googleapis-common-protos=="))
    assert pinned.split("==")[1] in note


def test_health_proto_matches_the_health_service_the_servers_run():
    """protos/grpc/health/v1/health.proto describes what grpcio-health-checking serves."""
    from grpc_health.v1 import health_pb2
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        status = protoc.main(
            ["protoc", f"-I{PROTOS}", f"--descriptor_set_out={out}", "grpc/health/v1/health.proto"]
        )
        assert status == 0
        (vendored,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    installed = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(installed)
    assert vendored.package == installed.package == "grpc.health.v1"
    for file in (vendored, installed):  # protoc adds json names to a descriptor set, not to stubs
        _clear_json_names(file.message_type)
    assert {m.name: m for m in vendored.message_type} == {m.name: m for m in installed.message_type}
    assert [s.name for s in vendored.service] == [s.name for s in installed.service] == ["Health"]
    methods = [{m.name: m for m in file.service[0].method} for file in (vendored, installed)]
    assert methods[0] == methods[1]
    assert set(methods[0]) == {"Check", "List", "Watch"}


def _clear_json_names(messages) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)
