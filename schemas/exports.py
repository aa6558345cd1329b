"""Lazy package exports: ``from stream import build_dataflow`` without importing every module of ``stream``.

A package's ``__init__`` names what users call and the module each name lives
in; the module is imported at first use (PEP 562), so importing one small
module of a package (``stream.state``) does not pull in Bytewax, Kafka and
ClickHouse clients.

>>> getattr_, dir_ = lazy_exports("schemas", {"PropstreamError": "schemas.errors"})
>>> getattr_("PropstreamError").__name__, dir_()
('PropstreamError', ['PropstreamError'])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package exporting ``names`` (name -> module)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
