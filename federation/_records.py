"""The plan history's serialisation adapter: plans and status updates as the bytes the store
keeps, which are their ``qtmesh.api.federation.v1`` messages. The only module of the history that
knows about protobuf; the store and the engine deal in domain objects."""

from __future__ import annotations

import dataclasses

from federation import _convert as convert
from federation.plan import Plan, StatusUpdate
from qtmesh.api.federation.v1 import federation_pb2 as pb


def encode_plan(plan: Plan) -> bytes:
    """The plan without its sequence (the store assigns it, and stamps it on read)."""
    message = convert.plan_to_proto(plan)
    message.sequence = 0
    return message.SerializeToString()


def decode_plan(payload: bytes, sequence: int) -> Plan:
    plan = convert.plan_from_proto(pb.GlobalActionPlan.FromString(payload))
    return dataclasses.replace(plan, sequence=sequence)


def encode_status(update: StatusUpdate) -> bytes:
    return convert.status_to_proto(update).SerializeToString()


def decode_status(payload: bytes, sequence: int) -> StatusUpdate:
    return convert.status_from_proto(pb.ActionStatusUpdate.FromString(payload), sequence)
