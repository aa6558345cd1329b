"""bench/live_step.py's A/B: the older code imported beside this checkout's, each with its own modules."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import stream.apply
import stream.shard
import stream.state
from bench.live_step import load_base
from schemas.events import EventRecord
from schemas.features import FeatureSpec
from schemas.groups import GroupCatalog, ProductGroup
from stream.state import StateConfig

ROOT = Path(__file__).resolve().parents[2]
T = 1_500_000_000_000


def test_the_older_code_runs_on_its_own_modules_and_this_checkouts_stay_in_place(tmp_path: Path):
    shutil.copytree(ROOT / "stream", tmp_path / "stream", ignore=shutil.ignore_patterns("_cells.*.so", "_cells.c"))
    shutil.copy(ROOT / "setup.py", tmp_path)  # an export (git archive): the compiled cells are built in place
    apply_py = tmp_path / "stream" / "apply.py"
    apply_py.write_text(apply_py.read_text() + "\nMARK = 'older'\n")
    old, old_state = load_base(tmp_path)
    assert old is not stream.shard and Path(old.__file__).resolve() == (tmp_path / "stream" / "shard.py").resolve()
    assert sys.modules["stream.shard"] is stream.shard and sys.modules["stream.apply"] is stream.apply
    assert old.apply_events.__globals__["MARK"] == "older"  # the older shard applies with the older apply.py
    assert not hasattr(stream.apply, "MARK")
    catalog = GroupCatalog((ProductGroup(name="coffee", items=("c1",)),), {"c1": (0, 1)})
    cfg = StateConfig.build(FeatureSpec(groups=("coffee",)))
    assert old_state is not stream.state and old_state.StateConfig is not StateConfig
    assert list((tmp_path / "stream").glob("_cells.*.so"))
    events = [EventRecord("u1", "c1", 2, T, "e1", 1.0, 250, "s"), EventRecord("u2", "c1", 2, T + 5, "e2", 1.0, 99, "s")]
    outs = []
    for module, state in ((old, old_state), (stream.shard, stream.state)):
        processor = module.ShardProcessor(state.StateConfig.build(cfg.spec), catalog, None, 1_000)
        inp = stream.shard.ShardInput(0, list(events), T + 10, "p0", 1, False, T + 5)
        outs.append(processor.process(module.CustomerShard(0), inp))
    assert list(outs[0].features) == list(outs[1].features) and len(outs[1].features) == 2
