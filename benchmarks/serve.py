"""One HTTP server process, frontdesk's app or a floor's, under identical uvicorn settings.

    python -m benchmarks.serve frontdesk --port 8000   # create_app(Settings()) with its lifespan
    python -m benchmarks.serve floor --port 8001       # benchmarks.floors.http

Both: one process, uvloop, httptools, no access log, the same backlog. frontdesk
logs the way `frontdesk serve` does (gateway.logs, JSON lines to stdout), minus
uvicorn's access lines, which `frontdesk serve` writes and the floor would not.
"""

from __future__ import annotations

import argparse
import logging

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("app", choices=["frontdesk", "floor"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.app == "frontdesk":
        from gateway.logs import configure_logging
        from gateway.settings import Settings
        from gateway.web.app import create_app

        settings = Settings()
        configure_logging(settings)
        app = create_app(settings)
    else:
        from benchmarks.floors.http import app

        logging.basicConfig(level=logging.WARNING)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        log_level="warning",
        backlog=4096,
        server_header=False,
    )


if __name__ == "__main__":
    main()
