"""`python -m services.common.healthcheck HOST:PORT`: exit 0 iff it is SERVING.

It reads the service's own config (env vars, LORAFLEET_CONFIG), so in a TLS
or mTLS deployment (LORAFLEET_TLS_*) it checks over TLS, presenting the
service's certificate as its client certificate.
"""

import sys

from services.common.config import ConfigError, load_config
from services.local.launcher import check_health

if __name__ == "__main__":
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50050"
    try:
        status = check_health(address, 3.0, config=load_config())
    except ConfigError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        sys.exit(2)
    print(status)
    sys.exit(0 if status == "SERVING" else 1)
