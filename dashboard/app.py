"""The dashboard's pages (Starlette, server-rendered Jinja2 HTML with pygal SVG charts).

- ``GET /``: trending now (top items and groups of the last window end, by
  surge and by count) with count-vs-forecast charts of the leaders; score
  histograms and segment sizes per group; pipeline health (events per second
  by event time, score rows written per second, dead letters by reason,
  freshness of scores, model versions). ``?window=24h`` picks a window,
  ``?at=2017-05-27T15:00`` the last window end at or before a time (UTC).
- ``GET /series?window=&scope=&type=&key=[&at=]``: one series' count-vs-forecast history, chart and table.
- ``GET /health``: 200 and ``{"status": "ok"}`` when the store answers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from dashboard import charts
from dashboard.queries import DashboardQueries, TrendPoint
from schemas.events import iso_utc
from schemas.settings import DashboardSettings

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def duration(seconds: float) -> str:
    """A duration in the unit a person reads best.

    >>> [duration(s) for s in (0.25, 90, 5400, 86_400 * 3.5, 300_000_000)]
    ['0.2 s', '1.5 min', '1.5 h', '3.5 d', '3472.2 d']
    """
    for unit, size, from_ in (("d", 86_400, 172_800), ("h", 3_600, 3_600), ("min", 60, 60)):
        if abs(seconds) >= from_:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


TEMPLATES.env.filters["duration"] = duration
LEADERS = 3  # series of each scope drawn as count-vs-forecast charts on the overview


def _leaders(points: list[TrendPoint]) -> tuple[str, list[str]] | None:
    """The type of the best-ranked row and its first ``LEADERS`` keys (rows are ordered by type, then rank)."""
    if not points:
        return None
    first = points[0].type
    return first, [p.key for p in points if p.type == first][:LEADERS]


def parse_at(text: str | None) -> int | None:
    """``?at=``: an ISO time (UTC when it has no offset) as Unix seconds; None when absent or unreadable.

    >>> parse_at("2017-05-27T15:00"), parse_at("2017-05-27 15:00+00:00"), parse_at("soon")
    (1495897200, 1495897200, None)
    """
    if not text:
        return None
    try:
        return int(iso_utc(text).timestamp())
    except ValueError:
        return None


def trending_view(q: DashboardQueries, cfg: DashboardSettings, window: str | None, at: int | None) -> dict[str, Any]:
    """The trending tables of the last window end at or before ``at``, and count-vs-forecast charts of their leaders.

    The leaders of a scope are those of its surge table when anything surges, else of its count table.
    """
    windows = sorted({w for w, _, _ in q.trend_series()})
    window = window or (cfg.window if cfg.window in windows or not windows else windows[0])
    end = q.window_end(window, at)
    tables: dict[str, list[TrendPoint]] = {}
    series_charts: list[dict[str, Any]] = []
    for scope, plural in (("item", "items"), ("group", "groups"), ("category", "categories")):
        for by, name in (("surge", f"surge-{plural}"), ("count", f"top-{plural}")):
            tables[name] = [] if end is None else q.top(window, scope, by, cfg.top, end)
        lead = _leaders(tables[f"surge-{plural}"]) or _leaders(tables[f"top-{plural}"])
        if lead is None or end is None:
            continue
        type_, keys = lead
        axis, series = q.history(window, scope, type_, keys, cfg.history_windows, end)
        series_charts += [
            {"scope": scope, "key": k, "type": type_,
             "svg": charts.count_vs_forecast(f"{scope} {k}: {type_}s per {window}", axis, series[k])}
            for k in keys
        ]
    shown = None if end is None else datetime.fromtimestamp(end, tz=UTC).strftime("%Y-%m-%d %H:%M")
    return {"window": window, "windows": windows, "end": shown, "tables": tables, "series_charts": series_charts}


def overview(q: DashboardQueries, cfg: DashboardSettings, window: str | None, at: int | None) -> dict[str, Any]:
    """Everything the overview page shows."""
    histograms = q.score_histograms(cfg.histogram_bins)
    events_rate, writes_rate = q.events_per_second(), q.writes_per_second()
    return {
        **trending_view(q, cfg, window, at),
        "histograms": [(g, charts.histogram(g, counts)) for g, counts in histograms.items()],
        "thresholds": cfg.thresholds,
        "segments": q.segment_sizes(cfg.thresholds),
        "events_svg": charts.rate("events per second (event time)", events_rate) if events_rate else None,
        "writes_svg": charts.rate("score rows written per second", writes_rate) if writes_rate else None,
        "dead_letters": q.dead_letters(),
        "freshness": q.freshness(),
        "models": q.models(),
        "refresh": cfg.refresh_seconds,
    }


def create_app(queries: DashboardQueries, cfg: DashboardSettings) -> Starlette:
    """The dashboard over ``queries`` (one client, embedded or server), configured by ``cfg``."""

    def index(request: Request) -> Response:
        p = request.query_params
        ctx = overview(queries, cfg, p.get("window"), parse_at(p.get("at")))
        return TEMPLATES.TemplateResponse(request, "index.html", ctx)

    def series(request: Request) -> Response:
        p = request.query_params
        missing = [k for k in ("window", "scope", "type", "key") if not p.get(k)]
        if missing:
            return Response(f"give {', '.join(missing)}", status_code=400, media_type="text/plain")
        until = parse_at(p.get("at")) or queries.window_end(p["window"])
        if until is None:
            return Response(f"no trending rows for window {p['window']}", status_code=404, media_type="text/plain")
        axis, points = queries.history(p["window"], p["scope"], p["type"], [p["key"]], cfg.history_windows, until)
        mine = points[p["key"]]
        title = f"{p['scope']} {p['key']}: {p['type']}s per {p['window']}"
        ctx = {
            "title": title,
            "svg": charts.count_vs_forecast(title, axis, mine),
            "rows": [(a, *mine[a]) for a in axis if a in mine],
            "refresh": cfg.refresh_seconds,
        }
        return TEMPLATES.TemplateResponse(request, "series.html", ctx)

    def health(request: Request) -> Response:
        queries.trend_series()
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/", index), Route("/series", series), Route("/health", health)],
    )
