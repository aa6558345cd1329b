"""Benchmark: parsing wire-format events, the model path against the fast path (``stream.fastparse``).

    python bench/parse_cost.py [--data-dir DIR] [--messages N] [--rounds K] [--batch B] [--content-ids]

Builds ``--messages`` Kafka message values exactly as bench/suite.py offers
them (``bench.workload.payload``: customers cloned from The Complete
Journey's first events, timestamps = now, an ``event_id`` each, or none with
``--content-ids``), then in the same process times
``EventParser.parse_batch`` over them in batches of ``--batch``, with the
fast path off (``EventParser(..., fast=False)``, the model path of main) and
on, in A/B pairs (the order alternating), and prints the median µs per message
of each over ``--rounds`` pairs, the speed-up (ratio of the medians, and the
median of the pairs' ratios), and the share of messages the
fast path took. It also times the decoders alone (pydantic's
``model_validate_json``, ``json.loads``, msgspec into the typed Struct,
msgspec over 1,000 messages joined in one call, orjson into a dict, when
installed) and checks that both parsers gave equal batches.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import households
from bench.workload import CloneWorkload, payload
from schemas.events import Event
from schemas.mapping import ColumnMapping
from stream.fastparse import WireFastPath, _Wire
from stream.parse import EventParser, ParsedBatch
from stream.sources.base import SourceBatch


def messages(data_dir: Path, n: int, content_ids: bool) -> list[bytes]:
    """``n`` message values as bench/suite.py produces them, from The Complete Journey's first events."""
    records = households(data_dir, n)
    workload = CloneWorkload(records, 100_000)
    now_ms = int(time.time() * 1000)
    out = []
    for i, (user, rec) in enumerate(itertools.islice(workload.events(), n)):
        data = payload(user, rec, now_ms, f"bench-{i}")
        if content_ids:
            d = json.loads(data)
            del d["event_id"]
            data = json.dumps(d).encode()
        out.append(data)
    return out


def parse_all(parser: EventParser, batches: list[SourceBatch]) -> tuple[float, list[ParsedBatch]]:
    """CPU seconds to parse every batch, and the parsed batches."""
    gc.collect()
    t0 = time.process_time()
    out = [parser.parse_batch(b) for b in batches]
    return time.process_time() - t0, out


def per_message(fn, items: list[bytes]) -> float:
    """µs of CPU per message of ``fn`` over ``items``."""
    t0 = time.process_time()
    for m in items:
        fn(m)
    return (time.process_time() - t0) / len(items) * 1e6


def decoders(items: list[bytes], rounds: int) -> dict[str, float]:
    """Median µs per message of each decoder alone (on the first 20,000 messages)."""
    items = items[:20_000]
    fast = WireFastPath()
    fns = {
        "pydantic model_validate_json": Event.model_validate_json,
        "json.loads": json.loads,
        "msgspec Struct decode": fast._decode,
        "WireFastPath.record (decode + checks + record)": lambda m: fast.record(m, "s"),
    }
    whole = msgspec.json.Decoder(list[_Wire]).decode  # one call per 1,000 messages joined as a JSON array
    fns["msgspec list[Struct], 1,000 joined per call"] = None  # timed below, per message
    try:  # the alternative decoder, not a dependency: `pip install orjson` to compare
        import orjson

        fns["orjson.loads (a dict, before any check)"] = orjson.loads
    except ImportError:
        pass
    chunks = [items[i : i + 1000] for i in range(0, len(items), 1000)]
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            if fn is None:
                t0 = time.process_time()
                for chunk in chunks:
                    whole(b"[" + b",".join(chunk) + b"]")
                times[k].append((time.process_time() - t0) / len(items) * 1e6)
            else:
                times[k].append(per_message(fn, items))
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("propstream-data"))
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5, help="A/B pairs; the median of each side is reported")
    ap.add_argument("--batch", type=int, default=1_000, help="messages per parse_batch call")
    ap.add_argument("--content-ids", action="store_true", help="send no event_id: every event gets its content id")
    args = ap.parse_args()

    items = messages(args.data_dir, args.messages, args.content_ids)
    batches = [
        SourceBatch([(f"bench/0/{i + j}", m) for j, m in enumerate(items[i : i + args.batch])], part="bench/0")
        for i in range(0, len(items), args.batch)
    ]
    old, new = EventParser(ColumnMapping(), fast=False), EventParser(ColumnMapping())
    taken = sum(new._fast is not None and new._fast(m, "s") is not None for m in items)
    times: dict[str, list[float]] = {"model path": [], "fast path": []}
    for r in range(args.rounds):
        pair = [("model path", old), ("fast path", new)]
        for name, parser in pair if r % 2 == 0 else pair[::-1]:
            took, out = parse_all(parser, batches)
            times[name].append(took / len(items) * 1e6)
            if r == 0:
                if name == "model path":
                    reference = out
                else:
                    fast_out = out
    same = all(a.records == b.records and a.dead == b.dead for a, b in zip(reference, fast_out, strict=True))
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "command": "python bench/parse_cost.py " + " ".join(sys.argv[1:]),
        "messages": len(items),
        "batch": args.batch,
        "rounds": args.rounds,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "us_per_message": {k: round(v, 2) for k, v in med.items()},
        "all_rounds_us": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "speedup": round(med["model path"] / med["fast path"], 2),
        "speedup_pairwise_median": round(
            statistics.median(a / b for a, b in zip(times["model path"], times["fast path"], strict=True)), 2
        ),
        "fast_path_share": round(taken / len(items), 4),
        "same_output": same,
        "decoders_us_per_message": decoders(items, args.rounds),
    }
    print(json.dumps(res, indent=2))
    if not same:
        sys.exit("the two parsers disagree on this workload")


if __name__ == "__main__":
    main()
