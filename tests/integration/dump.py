"""Print the final state of a propstream database as JSON (run in its own process).

Only one process may open a chDB path, so tests that ran the stream in
subprocesses read the results back through this module, also in a subprocess:

    python -m tests.integration.dump chdb:///path [database]
"""

from __future__ import annotations

import json
import sys

import clickhouse_connect


def dump(dsn: str, db: str = "propstream") -> dict:
    client = clickhouse_connect.get_client(dsn=dsn)
    q = client.query
    return {
        "features": {
            u: dict(f) for u, f in q(f"SELECT user_id, features FROM {db}.customer_features FINAL").result_rows
        },
        "scores": sorted(
            [list(r) for r in q(f"SELECT user_id, group_id, score, model_version FROM {db}.scores FINAL").result_rows]
        ),
        "events": q(f"SELECT count() FROM {db}.events FINAL").result_rows[0][0],
        "dead_letters": sorted([list(r) for r in q(f"SELECT source, reason FROM {db}.dead_letters FINAL").result_rows]),
    }


if __name__ == "__main__":
    print(json.dumps(dump(*sys.argv[1:])))
