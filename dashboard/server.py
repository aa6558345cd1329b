"""Serving the dashboard with uvicorn: blocking (``propstream dashboard``) or in a thread of a running stream.

chDB opens a path in one process only, so a stream writing the embedded
store serves its own dashboard (setting ``dashboard.in_run``) from a
thread, over the process's client: :class:`DashboardThread`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from dashboard.errors import DashboardError
from schemas.settings import Settings


def build_app(settings: Settings, client: Any) -> Any:
    """The dashboard app over ``client`` (the process's own, shared with a running stream)."""
    from dashboard.app import create_app
    from dashboard.queries import DashboardQueries

    return create_app(DashboardQueries(client, settings.clickhouse.database), settings.dashboard)


def _config(settings: Settings, client: Any) -> Any:
    import uvicorn

    d = settings.dashboard
    return uvicorn.Config(
        build_app(settings, client),
        host=d.host,
        port=d.port,
        access_log=False,
        log_level=settings.log_level.lower(),
        lifespan="off",
        server_header=False,
    )


def serve(settings: Settings, client: Any) -> None:
    """Serve until SIGINT/SIGTERM."""
    import uvicorn

    uvicorn.Server(_config(settings, client)).run()


class DashboardThread:
    """The dashboard served from a daemon thread of this process until :meth:`stop`.

    uvicorn installs no signal handlers outside the main thread, so the
    stream keeps its own; ``url`` has the bound port (``dashboard.port`` 0
    takes any free one).
    """

    def __init__(self, settings: Settings, client: Any):
        import uvicorn

        self.server = uvicorn.Server(_config(settings, client))
        self.thread = threading.Thread(target=self.server.run, name="propstream-dashboard", daemon=True)
        self.url = ""

    def start(self, timeout: float = 30.0) -> DashboardThread:
        """Start serving; returns once the socket listens (a port in use is a DashboardError)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                c = self.server.config
                msg = f"the dashboard could not listen on {c.host}:{c.port} (is the port in use? set dashboard.port)"
                raise DashboardError(msg)
            time.sleep(0.05)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> DashboardThread:
        return self if self.url else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
