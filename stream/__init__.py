"""The stream: customer state machine (pure), the Bytewax dataflow, sources, sinks, recovery."""

from schemas.exports import lazy_exports

_EXPORTS = {
    "build_dataflow": "stream.dataflow",
    "FlowConfig": "stream.dataflow",
    "FLOW_ID": "stream.dataflow",
    "EventParser": "stream.parse",
    "ParsedBatch": "stream.parse",
    "CustomerState": "stream.state",
    "StateConfig": "stream.state",
    "CustomerShard": "stream.shard",
    "ShardProcessor": "stream.shard",
    "ShardOutput": "stream.shard",
    "WatermarkRules": "stream.watermark",
    "FileReplaySource": "stream.sources",
    "read_batches": "stream.sources",
    "read_records": "stream.sources",
    "KafkaSource": "stream.sources.kafka",
    "ClickHouseSink": "stream.sinks.clickhouse",
    "ClickHouseWriter": "stream.sinks.clickhouse",
    "open_client": "stream.sinks.clickhouse",
    "migrate": "stream.sinks.clickhouse",
    "DeadLetterTopicSink": "stream.sinks.kafka",
    "create_store": "stream.recovery",
    "check_store": "stream.recovery",
    "produce": "stream.producer",
    "create_topics": "stream.topics",
    "require_topics": "stream.topics",
    "StreamError": "stream.errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports("stream", _EXPORTS)
