"""Run the inference service: `python -m services.inference`."""

import sys

from services.common.entry import run_service

if __name__ == "__main__":
    run_service("inference", sys.argv[1:])
