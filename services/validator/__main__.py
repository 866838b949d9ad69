"""Run the validator service: `python -m services.validator`."""

import sys

from services.common.entry import run_service

if __name__ == "__main__":
    run_service("validator", sys.argv[1:])
