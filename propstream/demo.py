"""``propstream demo``: The Complete Journey end to end on embedded defaults."""

from __future__ import annotations

import time
from pathlib import Path

from models.registry import ModelRegistry
from propstream import app, completejourney
from schemas.mapping import load_mapping
from schemas.settings import Settings
from schemas.tables import CUSTOMER_FEATURES, DEAD_LETTERS, SCORES
from stream.sinks.clickhouse import redact_dsn

EXAMPLE_QUERIES = f"""\
-- customers likely to buy coffee/tea in the next 30 days (calibrated probability >= 0.5)
SELECT user_id, score FROM {SCORES.at()} FINAL
WHERE group_id = 'coffee_tea' AND score >= 0.5 ORDER BY score DESC;

-- segment sizes per group at a threshold of 0.3
SELECT group_id, countIf(score >= 0.3) AS customers, round(avg(score), 3) AS mean_score
FROM {SCORES.at()} FINAL GROUP BY group_id ORDER BY customers DESC;

-- a campaign's audience, recorded with a 10% holdout salted per campaign by
--   propstream segment --campaign grill-june --group summer_grilling --top 100 --holdout 0.1
-- and measured later by `propstream uplift --campaign grill-june`: its targeted members
SELECT user_id, score FROM propstream.campaign_members FINAL
WHERE campaign = 'grill-june' AND NOT holdout ORDER BY score DESC;"""


def run(settings: Settings, log=print) -> dict:
    """Prepare data, train, replay through the dataflow, print a summary."""
    t0 = time.perf_counter()
    log(f"[1/4] preparing The Complete Journey under {settings.data_dir}")
    events, catalog = completejourney.prepare(settings.data_dir)
    settings = settings.model_copy(update={"catalog_file": catalog, "groups_file": completejourney.GROUPS_FILE})
    mapping = load_mapping(completejourney.MAPPING_FILE)
    log("[2/4] training one calibrated XGBoost model per product group")
    records, rejected = app.read_file_records([events], mapping, settings.events.types)
    log(f"  {len(records):,} events read for training ({rejected:,} rejected by the event contract)")
    app.train(settings, records, progress=log)  # a second demo on the same data dir trains nothing new
    del records
    registry = ModelRegistry(settings.models_dir)
    served = [g.name for g in app.group_rules(settings) if registry.production_version(g.name) is not None]
    log(f"[3/4] replaying {events.name} through the dataflow into ClickHouse ({redact_dsn(settings.dsn)})")
    source = app.build_source(settings, [Path(events)], mapping=mapping)
    stats = app.run_stream(settings, source, mapping, progress=lambda s: log("  " + s))
    flow_s = stats.elapsed
    client = app.client_for(settings)
    db = settings.clickhouse.database
    customers = client.query(f"SELECT count() FROM {CUSTOMER_FEATURES.at(db)} FINAL").result_rows[0][0]
    score_rows = client.query(f"SELECT count() FROM {SCORES.at(db)} FINAL").result_rows[0][0]
    dead = client.query(f"SELECT count() FROM {DEAD_LETTERS.at(db)} FINAL").result_rows[0][0]
    summary = {
        "events_in": stats.events_in,
        "applied": stats.applied,
        "dead_letters": dead,
        "customers": customers,
        "groups": len(served),
        "score_rows": score_rows,
        "dataflow_seconds": round(flow_s, 1),
        "events_per_second": round(stats.events_in / flow_s) if flow_s else None,
        "total_seconds": round(time.perf_counter() - t0, 1),
    }
    log("[4/4] summary")
    log(f"  events in           {summary['events_in']:,}")
    log(f"  events applied      {summary['applied']:,}")
    log(f"  dead letters        {summary['dead_letters']:,}")
    log(f"  customers           {summary['customers']:,}")
    log(f"  score rows (FINAL)  {summary['score_rows']:,}  ({len(served)} groups)")
    log(
        f"  dataflow throughput {summary['events_per_second']:,} events/s "
        f"({stats.events_in:,} events in {flow_s:.1f} s, 1 worker)"
    )
    log(f"  total time          {summary['total_seconds']} s")
    log("\nTry these in ClickHouse (chDB path above, or a server):\n" + EXAMPLE_QUERIES)
    return summary
