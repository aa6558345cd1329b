"""Scheduled training: one trainer at a time (a file lock in the data dir) and a repeat interval.

``propstream train --every 7d`` runs ``train --if-new-data`` now and then
every 7 days; ``propstream train --if-new-data`` is the same one pass, for
cron. Each pass takes ``TrainerLock``: a second trainer on the same data dir
exits at once with one line instead of training the same models twice.

>>> parse_every("7d"), parse_every("12h"), parse_every("90m")
(604800.0, 43200.0, 5400.0)
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from types import TracebackType

from schemas.errors import ConfigError, PropstreamError

LOCK_NAME = "train.lock"
_UNITS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}


class TrainerBusyError(PropstreamError):
    """Another trainer holds the data dir's training lock."""


def parse_every(text: str) -> float:
    """Seconds of an interval such as ``7d``, ``12h``, ``30m`` or ``45s``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhms])\s*", text)
    if not m or float(m.group(1)) <= 0:
        msg = f"train.every {text!r} is not an interval such as 7d, 12h, 30m"
        raise ConfigError(msg)
    return float(m.group(1)) * _UNITS[m.group(2)]


class TrainerLock:
    """An exclusive, non-blocking ``flock`` on ``DATA_DIR/train.lock``; the kernel frees it if the process dies."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> TrainerLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            msg = f"another trainer holds {self.path}; this one exits"
            raise TrainerBusyError(msg) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
