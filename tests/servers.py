"""Real HTTP servers on loopback for tests: our app, and small fakes of providers.

`LoopbackServer` runs an ASGI app under uvicorn in its own thread and event loop,
so the code under test meets a real socket and its own loop is never blocked.
`app_server` serves an app in the test's own loop (for our FastAPI app, whose
runtime lives in that loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import uvicorn


class LoopbackServer:
    def __init__(self, app) -> None:
        # loop="asyncio": on "auto", uvicorn 0.29 (our floor) installs uvloop's policy for the whole
        # process in Server.run, and every later test's loop would come from it.
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, lifespan="off", ws="none", loop="asyncio", log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="loopback-server", daemon=True)

    @property
    def url(self) -> str:
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        stopped = threading.Event()
        for _ in range(1000):
            if self._server.started or not self._thread.is_alive():
                break
            stopped.wait(0.01)
        assert self._server.started, "loopback server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextlib.asynccontextmanager
async def app_server(app, before_stop=None) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 in the current loop; yield its base URL.

    `before_stop` runs first on the way out, as our own server role does (e.g. ending
    the dashboard's live streams, which would otherwise hold the shutdown).
    """
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", ws="none", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        if before_stop is not None:
            before_stop()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)
