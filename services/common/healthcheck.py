"""`python -m services.common.healthcheck HOST:PORT`: exit 0 iff it is SERVING."""

import sys

from services.local.launcher import check_health

if __name__ == "__main__":
    status = check_health(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50050", 3.0)
    print(status)
    sys.exit(0 if status == "SERVING" else 1)
