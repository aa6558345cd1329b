"""bench/idle_floor.py: each part idles in a process of its own, read from /proc, and is gone afterwards."""

from __future__ import annotations

import argparse
import doctest
import json
import os
from pathlib import Path

import pytest

from bench import idle_floor


def test_the_doctests_pass():
    assert doctest.testmod(idle_floor).failed == 0


def test_the_batch_figure_comes_from_a_saved_suite_run_or_none(tmp_path: Path):
    saved = tmp_path / "suite.json"
    saved.write_text(json.dumps({"batch": {"cpu_s_per_refresh": 0.43}}))
    assert idle_floor.batch_refresh_cpu(saved) == 0.43
    saved.write_text(json.dumps({"naive": {}}))
    assert idle_floor.batch_refresh_cpu(saved) is None
    saved.write_text("not json")
    assert idle_floor.batch_refresh_cpu(saved) is None
    assert idle_floor.batch_refresh_cpu(tmp_path / "missing.json") is None


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"settle": 0.0, "window": 1.0, "freshness": 3600.0, "partitions": 2, **kw})


def _children() -> set[int]:
    """Running processes whose parent is this one (from /proc)."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                out.add(int(d.name))
    return out


@pytest.mark.parametrize("part", ["python", "chdb"])
def test_a_part_is_read_while_it_runs_and_ended_after(part: str, tmp_path: Path):
    before = _children()
    cpu_a_day = idle_floor.part_floor(part, _args(), "", tmp_path)
    assert cpu_a_day >= 0.0
    assert _children() == before  # its process was ended
    assert (tmp_path / part / "chdb").exists() == (part == "chdb")  # its store under the work dir, nowhere else


def test_the_kafka_part_consumes_an_empty_topic_and_is_ended_after(bootstrap, tmp_path: Path):
    before = _children()
    assert idle_floor.part_floor("kafka", _args(), bootstrap, tmp_path) >= 0.0
    assert _children() == before
