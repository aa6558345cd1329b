"""Contracts shared by every package.

Events and the records between modules, settings, product groups, feature
naming, model cards, ClickHouse tables, the root exception.
"""

from schemas.exports import lazy_exports

_EXPORTS = {
    "Event": "schemas.events",
    "EventRecord": "schemas.events",
    "EventType": "schemas.events",
    "Vocabulary": "schemas.events",
    "DeadLetter": "schemas.events",
    "FeatureRow": "schemas.events",
    "ItemActivityRow": "schemas.events",
    "event_json_schema": "schemas.events",
    "Settings": "schemas.settings",
    "StreamSettings": "schemas.settings",
    "EventSettings": "schemas.settings",
    "KafkaSettings": "schemas.settings",
    "ClickHouseSettings": "schemas.settings",
    "TrainSettings": "schemas.settings",
    "setting_docs": "schemas.settings",
    "ProductGroup": "schemas.groups",
    "GroupCatalog": "schemas.groups",
    "load_groups": "schemas.groups",
    "ColumnMapping": "schemas.mapping",
    "load_mapping": "schemas.mapping",
    "FeatureSpec": "schemas.features",
    "ModelCard": "schemas.cards",
    "Stage": "schemas.cards",
    "TABLES": "schemas.tables",
    "Table": "schemas.tables",
    "MIGRATIONS": "schemas.tables",
    "SCHEMA_VERSION": "schemas.tables",
    "row_version": "schemas.tables",
    "PropstreamError": "schemas.errors",
    "ConfigError": "schemas.errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports("schemas", _EXPORTS)
