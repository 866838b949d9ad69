"""Helpers for the JSON a durable job stores: its spec and result.

A job row must carry everything a replica needs to run or show the job after
a restart, so protobuf messages are stored as their JSON (no field lost) and
dataclasses as dicts; reading back keeps only the fields a class still has,
so a job stored by an older version of a service still loads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf import json_format

from lorafleet.v1 import common_pb2


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The items of `data` that are fields of the dataclass `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def message_to_json(message: Any) -> dict[str, Any] | None:
    if message is None:
        return None
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def message_from_json(data: dict[str, Any] | None, cls: type) -> Any:
    if data is None:
        return None
    return json_format.ParseDict(data, cls(), ignore_unknown_fields=True)


def artifact_from_json(data: dict[str, Any] | None) -> Any:
    return message_from_json(data, common_pb2.Artifact)


def number(value: Any) -> Any:
    """NaN and infinities are stored as strings (PostgreSQL's JSON has none):
    floats again."""
    if value in ("NaN", "Infinity", "-Infinity"):
        return float(value)
    return value
