"""The benchmark tests reuse the integration fixtures (a real Kafka broker, started only when a test asks for it)."""

from tests.integration.conftest import bootstrap, broker  # noqa: F401
