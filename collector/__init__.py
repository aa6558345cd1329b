"""HTTP collector: pixels, sendBeacon and backends put validated events on Kafka, answered after Kafka acknowledged."""

from schemas.exports import lazy_exports

_EXPORTS = {
    "create_app": "collector.app",
    "serve": "collector.server",
    "CollectorApp": "collector.server",
    "snippet_js": "collector.snippet",
    "Intake": "collector.intake",
    "Outcome": "collector.intake",
    "KafkaPublisher": "collector.publisher",
    "CollectorError": "collector.errors",
    "KafkaUnavailable": "collector.errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports("collector", _EXPORTS)
