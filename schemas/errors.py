"""The project's root exception; each package subclasses it (``schemas``, ``stream``, ``models``, the app).

A ``PropstreamError`` is an expected failure a user can act on: its message
names what failed and what to do, in one line. The command line prints it and
exits with status 2; anything else is a bug and keeps its traceback.

>>> issubclass(ConfigError, PropstreamError)
True
"""

from __future__ import annotations


class PropstreamError(Exception):
    """An expected failure with a one-line message that says what to do."""


class ConfigError(PropstreamError, ValueError):
    """A configuration file (settings, groups, mapping) is missing or invalid; the message names the file."""
