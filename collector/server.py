"""Serving the collector with uvicorn: one process, or ``collector.workers`` processes sharing one socket."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from schemas.settings import Settings


class CollectorApp:
    """The collector as a picklable ASGI app: each worker process builds its own (producer, metrics) on first use.

    uvicorn's worker processes are spawned and receive the app pickled, so the
    settings reach them whole (flags, variables and file alike), secrets
    included, without passing through the environment.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Build the Starlette app on the first message (the lifespan startup), then delegate."""
        if self._app is None:
            from collector.app import create_app

            self._app = create_app(self.settings)
        await self._app(scope, receive, send)

    def __getstate__(self) -> dict[str, Any]:
        """Only the settings travel to a worker."""
        return {"settings": self.settings, "_app": None}


def uvicorn_config(settings: Settings) -> Any:
    """The uvicorn configuration: no access log (it would show pixels' query strings, user ids included)."""
    import uvicorn

    c = settings.collector
    return uvicorn.Config(
        CollectorApp(settings),
        host=c.host,
        port=c.port,
        workers=c.workers,
        access_log=False,
        log_level=settings.log_level.lower(),
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=int(c.ack_timeout_seconds) + 5,
    )


def serve(settings: Settings) -> None:
    """Check that Kafka answers and the topics exist, then serve until SIGINT/SIGTERM."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from stream.topics import require_topics

    require_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dead_letters_topic])
    config = uvicorn_config(settings)
    if settings.collector.workers == 1:
        uvicorn.Server(config).run()
        return
    # Each worker writes its metrics here; /metrics sums them (collector.metrics).
    with tempfile.TemporaryDirectory(prefix="propstream-collector-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
