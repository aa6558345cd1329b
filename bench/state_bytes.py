"""Benchmark: where the bytes of a customer's state are, after one basket and after a year of history.

    python bench/state_bytes.py [--data-dir DIR] [--households N] [--json]

Applies The Complete Journey's events to ``CustomerState`` objects through
the stream's own path (``stream.apply.apply_events``: duplicate ids kept,
baskets counted as one run), in two scenarios:

- ``basket``: each household's first basket only (the live suite's state
  phase: one basket per customer, its event ids still within the allowed
  lateness);
- ``year``: every event of the file in time order, in one-day batches, each
  customer's ids older than the retention horizon (the batch end minus the
  default 24 h of allowed lateness) forgotten after each batch as the shard
  does, then every customer moved to the file's last event time.

For each it prints bytes per customer: Python heap allocated for the states
(``tracemalloc``, states only, not the dict that holds them), a deep
``sys.getsizeof`` of each slot of the state (shared small ints not counted),
and the pickled size. Only public calls, so a run with ``PYTHONPATH``
pointing at an export of older code measures that code (A/B).
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import sys
import tracemalloc
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import complete_journey
from propstream import app
from schemas.features import DAY_MS
from stream.apply import apply_events
from stream.state import CustomerState, StateConfig

LATENESS_MS = 24 * 3_600_000  # stream.allowed_lateness_hours' default


def deep_size(obj: object, counted: set[int]) -> int:
    """Bytes of ``obj`` and everything it holds (each object once; cached small ints and None are free)."""
    if obj is None or isinstance(obj, bool) or (isinstance(obj, int) and -5 <= obj <= 256) or id(obj) in counted:
        return 0
    counted.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, counted) + deep_size(v, counted) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(deep_size(v, counted) for v in obj)
    elif not isinstance(obj, str | bytes | int | float | array) and hasattr(type(obj), "__slots__"):
        for name in slots_of(obj):
            size += deep_size(slot_value(obj, name), counted)
    return size


def slot_value(obj: object, name: str) -> object:
    """A slot's value, None when unset; never ``__getattr__`` (which unpacks a packed ``CustomerState``)."""
    try:
        return object.__getattribute__(obj, name)
    except AttributeError:
        return None


def slots_of(obj: object) -> list[str]:
    """Every slot name of ``obj``'s class and its bases."""
    names: list[str] = []
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    return names


def measure(states: list[CustomerState]) -> dict:
    """Bytes per customer: deep size per slot, the object itself, and pickled."""
    n = len(states)
    per_slot: dict[str, int] = {}
    total = 0
    for s in states:
        counted: set[int] = set()
        total += deep_size(s, counted)
        for name in slots_of(s):
            per_slot[name] = per_slot.get(name, 0) + deep_size(slot_value(s, name), set())
    return {
        "customers": n,
        "deep_bytes": round(total / n),
        "slot_bytes": {k: round(v / n) for k, v in sorted(per_slot.items(), key=lambda kv: -kv[1])},
        "pickled_bytes": round(sum(len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states) / n),
    }


def run(cfg: StateConfig, catalog, batches: list[list], end: int | None) -> dict:
    """Apply ``batches`` (one ``apply_events`` call each) with tracemalloc on; the states' heap bytes per customer.

    ``end``: after each batch its customers advance to the batch's last event and forget ids past retention;
    at the end every customer advances to ``end``. None: the events are applied, nothing more.
    """
    customers: dict[str, CustomerState] = {}
    items: dict = {}
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for batch in batches:
        out = apply_events(cfg, catalog, customers, items, batch, horizon=None)
        horizon = batch[-1].ts_ms - LATENESS_MS
        for user in out.dirty if end is not None else ():
            customers[user].advance(cfg, batch[-1].ts_ms)
            customers[user].forget_seen_before(horizon)
        items.clear()  # item-activity cells are not customer state
    if end is not None:
        for state in customers.values():
            state.advance(cfg, end)
    states = list(customers.values())
    del out, batch
    gc.collect()  # only what the states hold: no garbage of the last batch
    holder = tracemalloc.get_traced_memory()[0]
    customers_dict_bytes = sys.getsizeof(customers)
    tracemalloc.stop()
    result = measure(states)
    result["heap_bytes"] = round((holder - base - customers_dict_bytes) / len(states))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("propstream-data"))
    ap.add_argument("--households", type=int, default=0, help="only the first N households (0: all 2,469)")
    ap.add_argument("--only", choices=("basket", "year"), help="one scenario only")
    args = ap.parse_args()
    settings, records, _ = complete_journey(args.data_dir)
    catalog = app.load_catalog(settings)
    cfg = StateConfig.build(app.feature_spec(catalog, settings.events.types))
    records = sorted(records, key=lambda r: r.ts_ms)
    if args.households:
        keep = sorted({r.user_id for r in records})[: args.households]
        chosen = set(keep)
        records = [r for r in records if r.user_id in chosen]
    first: dict[str, int] = {}
    for r in records:
        first.setdefault(r.user_id, r.ts_ms)
    basket = [r for r in records if r.ts_ms == first[r.user_id]]
    days: dict[int, list] = {}
    for r in records:
        days.setdefault(r.ts_ms // DAY_MS, []).append(r)
    out: dict = {"groups": len(cfg.spec.groups)}
    if args.only != "year":
        out["basket"] = run(cfg, catalog, [basket], None)
        out["basket"]["events_per_customer"] = round(len(basket) / out["basket"]["customers"], 1)
    if args.only != "basket":
        out["year"] = run(cfg, catalog, [days[d] for d in sorted(days)], records[-1].ts_ms)
        out["year"]["events_per_customer"] = round(len(records) / out["year"]["customers"], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
