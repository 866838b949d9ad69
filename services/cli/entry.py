"""The `lorafleet` console script. It is installed with the package, and the
package also installs as the client SDK alone (`pip install lorafleet`: grpcio
and protobuf only): there the command says what to install instead of
failing with a traceback."""

from __future__ import annotations

import sys


def run() -> int:
    try:
        from services.cli.main import main
    except ImportError as exc:
        print(
            f"error: the lorafleet command is part of the server and needs its "
            f"packages ({exc.name or exc} is missing): pip install 'lorafleet[server]' "
            "(the client SDK, `from lorafleet import Client`, needs only grpcio "
            "and protobuf)",
            file=sys.stderr,
        )
        return 2
    return main()
