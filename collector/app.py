"""The collector's HTTP endpoints (Starlette; served by uvicorn, ``collector.server``).

- ``POST /events``: one event object or a JSON array of them (sendBeacon,
  backends). Answered only after Kafka acknowledged everything the request
  wrote: 200 all accepted; 207 some accepted, some rejected (per-event
  reasons); 400 none accepted or not JSON; 413 body or array too large;
  503 + ``Retry-After`` when Kafka did not acknowledge (nothing is accepted;
  retry with the same body).
- ``GET /pixel.gif?user_id=&item_id=&type=[&timestamp=&event_id=&quantity=&value=]``:
  the same validation; always a 1x1 transparent GIF with ``Cache-Control:
  no-store``, whatever happens (``X-Propstream-Result`` says what did).
- ``GET /health``: 200 when Kafka answers and both topics exist, else 503.
- ``GET /metrics``: Prometheus text format.
- ``GET /propstream.js``: the page snippet (``collector.snippet``).

No request body, query string or user id is logged.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector import metrics
from collector.errors import KafkaUnavailable
from collector.intake import Intake, Outcome
from collector.publisher import KafkaPublisher
from collector.snippet import snippet_js
from schemas.mapping import ColumnMapping
from schemas.settings import Settings
from stream.parse import EventParser

log = logging.getLogger(__name__)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")  # 1x1 transparent GIF
NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}
_HEAD = 64 * 1024  # what a dead letter keeps of a body too large to read


async def _read_body(request: Request, limit: int) -> tuple[bytes, int | None]:
    """The body, or (its first bytes, its size so far) when it is larger than ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return b"", int(declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:_HEAD], size
        chunks.append(chunk)
    return b"".join(chunks), None


def create_app(settings: Settings, clock: Callable[[], float] = time.time) -> Starlette:
    """The collector of one worker process: its own producer, started and flushed by the app's lifespan."""
    c = settings.collector
    parser = EventParser(ColumnMapping(), wall_clock=clock, types=settings.events.types)
    intake = Intake(parser, c.max_events)
    publisher = KafkaPublisher(settings.kafka, c, type_names=parser.types.names)
    retry_after = {"Retry-After": str(c.retry_after_seconds)}

    async def deliver(outcome: Outcome) -> None:
        """Kafka acknowledges the request's events and dead letters, or KafkaUnavailable."""
        await publisher.publish(outcome.events, outcome.dead)
        metrics.EVENTS_ACCEPTED.inc(len(outcome.events))
        for dead in outcome.dead:
            metrics.EVENTS_REJECTED.labels(metrics.reason_kind(dead.reason)).inc()

    def timed(endpoint: str, handler: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
        async def run(request: Request) -> Response:
            t0 = time.perf_counter()
            response = await handler(request)
            metrics.REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - t0)
            metrics.REQUESTS.labels(endpoint, str(response.status_code)).inc()
            return response

        return run

    async def post_events(request: Request) -> Response:
        rid = uuid.uuid4().hex[:16]
        now_ms = int(clock() * 1000)
        raw, too_large = await _read_body(request, c.max_body_bytes)
        if too_large is not None:
            reason = f"body too large: {too_large:,}+ bytes > {c.max_body_bytes:,} (collector.max_body_bytes)"
            outcome = Outcome.refused(413, reason, raw, rid)
        else:
            outcome = intake.body(raw, rid, now_ms)
        try:
            await deliver(outcome)
        except KafkaUnavailable as exc:
            body = {"accepted": 0, "error": f"Kafka unavailable: {exc}; retry after {c.retry_after_seconds} s"}
            return JSONResponse(body, status_code=503, headers=retry_after)
        return JSONResponse(outcome.as_json(), status_code=outcome.status)

    async def pixel(request: Request) -> Response:
        result = "accepted"
        try:
            outcome = intake.query(request.query_params, uuid.uuid4().hex[:16], int(clock() * 1000))
            await deliver(outcome)
            if outcome.dead:
                result = "rejected"
        except KafkaUnavailable:
            result = "unavailable"
        except Exception as exc:  # a pixel answers a GIF whatever happens; the type only (no user data)
            log.error("pixel request failed: %s", type(exc).__name__)
            result = "error"
        return Response(PIXEL, media_type="image/gif", headers={**NO_STORE, "X-Propstream-Result": result})

    async def health(_request: Request) -> Response:
        ok, detail = await publisher.reachable()
        body = {"status": "ok" if ok else "unavailable", "kafka": detail, "queue_depth": publisher.queue_depth}
        return JSONResponse(body, status_code=200 if ok else 503, headers=NO_STORE)

    async def metrics_text(_request: Request) -> Response:
        data, content_type = metrics.exposition()
        return Response(data, headers={**NO_STORE, "Content-Type": content_type})

    async def snippet(_request: Request) -> Response:
        return Response(snippet_js(), media_type="application/javascript", headers={"Cache-Control": "max-age=300"})

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        publisher.start()
        try:
            yield
        finally:
            left = publisher.close(c.ack_timeout_seconds)
            if left:
                log.warning("%d message(s) were still unacknowledged at shutdown", left)

    routes = [
        Route("/events", timed("events", post_events), methods=["POST"]),
        Route("/pixel.gif", timed("pixel", pixel), methods=["GET"]),
        Route("/health", timed("health", health), methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/propstream.js", snippet, methods=["GET"]),
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=c.origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type"],
        max_age=3600,
    )
    return Starlette(routes=routes, middleware=[cors], lifespan=lifespan)
