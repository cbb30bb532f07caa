"""Server reflection, both ``grpc.reflection.v1`` (what current grpcurl, Postman and grpc-js'
reflection clients ask first) and ``grpc.reflection.v1alpha`` (what older ones ask).

grpcio-reflection only implements v1alpha. v1 is the same protocol under another package: the
messages are wire-identical (same fields, same numbers; protos/grpc/README.md), so the v1 service
is v1alpha's servicer behind v1's method name, decoding and encoding with v1alpha's messages.
Importing v1's generated module puts its file in the default descriptor pool, so reflection also
describes the v1 service itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection as v1alpha
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from qtmesh.api.grpc.reflection.v1 import reflection_pb2 as v1_pb2

V1_SERVICE_NAME: str = v1_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
V1ALPHA_SERVICE_NAME: str = v1alpha.SERVICE_NAME
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
_METHOD = "ServerReflectionInfo"


def enable_server_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves reflection v1 and v1alpha on ``server``, listing ``service_names`` and both
    reflection services."""
    names = list(dict.fromkeys([*service_names, *SERVICE_NAMES]))
    servicer = v1alpha.aio.ReflectionServicer(names)
    handlers = {
        _METHOD: grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=v1alpha_pb2.ServerReflectionRequest.FromString,
            response_serializer=v1alpha_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    for service in SERVICE_NAMES:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
