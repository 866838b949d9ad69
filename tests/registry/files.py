"""Well-formed file contents for registry tests."""

from __future__ import annotations

import json
import struct


def safetensors_bytes(payload: bytes) -> bytes:
    """A valid safetensors file holding `payload` as one U8 tensor.

    The registry checks every .safetensors header at registration, so test
    weights must be well formed; distinct payloads still give distinct digests.
    """
    header = json.dumps(
        {
            "weights": {
                "dtype": "U8",
                "shape": [len(payload)],
                "data_offsets": [0, len(payload)],
            }
        }
    ).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + payload
