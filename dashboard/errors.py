"""Errors of the ``dashboard`` package."""

from __future__ import annotations

from schemas.errors import PropstreamError


class DashboardError(PropstreamError):
    """The dashboard cannot be served as configured (the port); one line says why."""
