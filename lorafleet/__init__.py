"""lorafleet: the client SDK and generated contracts (lorafleet.v1) of the suite."""

from lorafleet.client import Client

__all__ = ["Client"]
__version__ = "0.1.0"
