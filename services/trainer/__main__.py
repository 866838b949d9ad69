"""Run the trainer service: `python -m services.trainer`."""

import sys

from services.common.entry import run_service

if __name__ == "__main__":
    run_service("trainer", sys.argv[1:])
