"""`python -m services.registry`: run the registry service."""

import sys

from services.common.entry import run_service

if __name__ == "__main__":
    run_service("registry", sys.argv[1:])
