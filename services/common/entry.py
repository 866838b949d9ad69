"""`python -m services.<name>` and `lorafleet serve <name>`: run one service."""

from __future__ import annotations

import argparse
import importlib

from services.common.config import SERVICE_NAMES, ConfigError, load_config
from services.common.server import serve_forever
from services.common.telemetry import setup_logging, setup_tracing


def run_service(name: str, argv: list[str] | None = None) -> None:
    if name not in SERVICE_NAMES:
        raise SystemExit(
            f"unknown service {name!r}; choose one of {', '.join(SERVICE_NAMES)}"
        )
    parser = argparse.ArgumentParser(prog=f"lorafleet serve {name}")
    parser.add_argument("--config", help="YAML config file (else LORAFLEET_CONFIG)")
    parser.add_argument("--port", type=int, help="port to listen on (0 = any free)")
    parser.add_argument("--data-dir", help="root of all lorafleet state")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, port=args.port, data_dir=args.data_dir)
        # Before the service builds anything: what it logs while starting (jobs
        # taken back from an earlier run, migrations) must reach the log too.
        setup_logging(name, config)
        setup_tracing(name, config)
        module = importlib.import_module(f"services.{name}.server")
        running = module.create(config)
    except ConfigError as exc:
        raise SystemExit(f"lorafleet serve {name}: {exc}") from None
    serve_forever(running, config)
