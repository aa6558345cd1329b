"""A promotion or rollback while another process holds the embedded store still prints the thresholds report.

The pytest process opens the session's chDB path (as a running stream
would hold it), so `propstream models rollback` / `promote` in a subprocess
cannot open the store. The report then comes from the test slice `train`
saved with each model (``offline_train.slices``) and must equal a recount on
examples replayed from the raw events.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from models.registry import ModelRegistry
from offline_train.dataset import build_examples
from offline_train.slices import load_slice
from propstream import app
from schemas.events import Event
from stream.state import StateConfig
from tests.integration.conftest import PLAN, SMALL_DATA_PARAMS, make_settings
from tests.integration.kafka_helpers import ROOT
from tests.integration.test_model_lifecycle import _printed, _same

pytestmark = pytest.mark.integration


def _recount(settings, records, group: str, old: int, new: int) -> dict[float, tuple]:
    """Segment size, mean score and observed rate per threshold on the new model's test slice, by brute force."""
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog)
    registry = ModelRegistry(settings.models_dir)
    at = registry.card(group, new).test_cutoff
    assert at is not None
    ex = build_examples(records, StateConfig.build(spec), catalog, [at], 30, ("purchase",))
    y = ex.labels[:, spec.groups.index(group)].astype(float)
    probs = {}
    for v in (old, new):
        art = registry.load(group, v)
        probs[v] = art.predict(ex.x[:, art.input_positions(spec.index)])
    out = {}
    for k in range(1, 10):
        t = round(k / 10, 1)
        row: list = []
        for v in (old, new):
            sel = probs[v] >= t
            n = int(sel.sum())
            row += [n, float(probs[v][sel].mean()) if n else float("nan"), float(y[sel].mean()) if n else float("nan")]
        out[t] = tuple(row)
    return out


def _cli(settings, world, *args: str) -> tuple[dict, str]:
    env = {
        **os.environ,
        "PROPSTREAM_CLICKHOUSE__DATABASE": settings.clickhouse.database,
        "PROPSTREAM_GROUPS_FILE": str(world.groups_file),
        "PYTHONPATH": str(ROOT),
    }
    flags = ["--data-dir", str(settings.data_dir), "--clickhouse", settings.dsn, "--catalog", str(world.catalog_file)]
    done = subprocess.run(
        [sys.executable, "-m", "propstream", "models", *args, *flags, "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout), done.stderr


def test_moves_while_the_store_is_held_print_the_thresholds_report_from_the_saved_slice(
    world, trained_dir, tmp_path, chdb_dsn
):
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = make_settings(tmp_path, world, chdb_dsn)
    records = [Event.model_validate(e).to_record("t") for e in world.events]
    app.train(
        settings, records, groups=["coffee"], plan=PLAN, progress=lambda _: None, params=SMALL_DATA_PARAMS, force=True
    )
    registry = ModelRegistry(settings.models_dir)
    assert registry.production_version("coffee") == 2
    saved = load_slice(registry.folder("coffee", 2))
    assert saved is not None and saved.at == PLAN.test.isoformat() and len(saved.users) > 0
    # The slice holds the columns of v2 and of v1 (production when v2 was trained), nothing else.
    wanted = set(registry.card("coffee", 2).feature_names) | set(registry.card("coffee", 1).feature_names)
    assert set(saved.names) == wanted
    app.client_for(settings)  # this process holds the embedded store, as a running stream would

    done, err = _cli(settings, world, "rollback", "coffee", "--by", "ann", "--reason", "held store")
    assert (done["version"], done["previous"], done["store"]) == (1, 2, "held")
    assert done["report"] is not None and done["report"]["slice_at"] == PLAN.test.isoformat()
    _same(_printed(err.splitlines(), "coffee"), _recount(settings, records, "coffee", 2, 1))

    done, err = _cli(settings, world, "promote", "coffee", "2", "--reason", "back again")
    assert (done["version"], done["previous"], done["store"]) == (2, 1, "held")
    printed = _printed(err.splitlines(), "coffee")
    _same(printed, _recount(settings, records, "coffee", 1, 2))
    # A real report: segment sizes differ between thresholds, and the precision at 0.1 is defined.
    assert len({v[3] for v in printed.values()}) > 1 and not np.isnan(printed[0.1][4])
