"""Integration tests run against the real local Kafka and Redis.

The fixtures (`services`, `topic_prefix`, `key_prefix`, `redis_client`, `kafka_admin`,
`oo_env`) come from `tests/fixtures_services.py`, loaded for all of `tests/` by
`tests/conftest.py`, so `tests/e2e/` shares them. Nothing here skips: a service that
cannot be started or reached fails the test with the reason.
"""
