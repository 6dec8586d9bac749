"""The image's HEALTHCHECK: healthy when this container's role answers /healthz.

One image runs every role: `serve` answers on FRONTDESK_HTTP_PORT, `worker` and
`smtp` on FRONTDESK_OPS_PORT; whichever answers 200 will do. Standard library
only, so it costs one short Python start and no dependency.
"""

import os
import sys
import urllib.request


def main() -> int:
    ports = [os.environ.get("FRONTDESK_HTTP_PORT") or "8000", os.environ.get("FRONTDESK_OPS_PORT") or "9090"]
    for port in dict.fromkeys(ports):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return 0
        except OSError:
            continue
    return 1


if __name__ == "__main__":
    sys.exit(main())
