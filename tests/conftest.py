"""Shared fixtures: a private, real redis-server for the whole session (no in-memory imitation),
and librdkafka's mock Kafka cluster over TCP."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

# The API server suite needs a built control plane and runs only through `make test-apiserver`.
collect_ignore = [] if os.environ.get("MODELMONITOR_APISERVER_TESTS") else ["apiserver"]


@pytest.fixture(scope="session")
def redis_server():
    from modelmonitor.local.redis_server import RedisServer
    server = RedisServer(durable=False).start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_client(redis_server):
    from modelmonitor.local.redis_server import connect
    client = connect(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def redis_url(redis_server, redis_client):
    return redis_server.url


@pytest.fixture(scope="module")
def kafka_bootstrap():
    """``host:port`` of a Kafka mock cluster on loopback: a confluent-kafka client created with
    `test.mock.num.brokers` runs librdkafka's mock broker for as long as the client lives, and
    kafka-python (the project's client) talks to it like to any Kafka broker."""
    import confluent_kafka
    keeper = confluent_kafka.Producer({"test.mock.num.brokers": 1, "log_level": 3})
    brokers = keeper.list_topics(timeout=10).brokers
    assert len(brokers) == 1
    (meta,) = brokers.values()
    assert meta.host == "127.0.0.1"
    yield f"{meta.host}:{meta.port}"
    keeper.flush(1)
