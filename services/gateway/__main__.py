"""Run the gateway service: `python -m services.gateway`."""

import sys

from services.common.entry import run_service

if __name__ == "__main__":
    run_service("gateway", sys.argv[1:])
