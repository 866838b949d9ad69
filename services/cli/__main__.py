"""`python -m services.cli ...` = the `lorafleet` command."""

import sys

from services.cli.main import main

sys.exit(main())
