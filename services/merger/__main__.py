"""Run the merger service: `python -m services.merger`."""

import sys

from services.common.entry import run_service

if __name__ == "__main__":
    run_service("merger", sys.argv[1:])
