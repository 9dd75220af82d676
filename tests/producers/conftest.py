"""Fixtures for the SDK tests: the suite's broker and topics unique to one test."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from runstream import kafka
from runstream.topics import RAW_KINDS, Topics


@pytest.fixture(scope="session")
def sdk_broker(broker: str) -> str:
    """The suite's real Kafka-protocol broker (``tests/conftest.py``): ``127.0.0.1:PORT``."""
    return broker


@pytest.fixture
def sdk_topics(sdk_broker: str) -> Topics:
    """Raw topics under a prefix unique to one test, created on the broker."""
    topics = Topics(f"sdk{uuid.uuid4().hex[:10]}.")
    asyncio.run(kafka.ensure_topics(sdk_broker, [topics.raw(k) for k in RAW_KINDS], 2))
    return topics
