"""The web dashboard: trending, score distributions, segment sizes and pipeline health, server-rendered.

``propstream dashboard`` serves it on its own; ``propstream run`` with
``dashboard.in_run`` serves it from the stream's process (the only one that
may open an embedded store while the stream writes). Every query is in
``dashboard.queries``.
"""

from dashboard.errors import DashboardError
from dashboard.queries import DashboardQueries
from dashboard.server import DashboardThread, build_app, serve

__all__ = ["DashboardError", "DashboardQueries", "DashboardThread", "build_app", "serve"]
