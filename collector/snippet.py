"""The page snippet (``static/propstream.js``): served at ``/propstream.js`` and printed by ``propstream snippet``."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def snippet_js() -> str:
    """The JavaScript a shop page includes to send page views, add-to-cart and purchases."""
    return files("collector").joinpath("static", "propstream.js").read_text(encoding="utf-8")
