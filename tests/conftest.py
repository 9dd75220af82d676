"""Shared fixtures: a real Kafka-protocol broker (Tansu) on a free loopback port.

Timeouts scale with ``RUNSTREAM_TEST_TIME_SCALE`` (default 1) so that a slow
CI machine does not flake.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstream.embedded import broker_command, free_port

TIME_SCALE = float(os.environ.get("RUNSTREAM_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A timeout in seconds, scaled for the machine the tests run on."""
    return seconds * TIME_SCALE


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {port}")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker for the session; yields its bootstrap address ``127.0.0.1:PORT``."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("broker") / "broker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(broker_command(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, scaled(20))
        from runstream import kafka

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
def topic_prefix() -> str:
    """A topic prefix unique to one test."""
    return f"t{uuid.uuid4().hex[:10]}."


REAL_LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-logs"


@pytest.fixture(scope="session")
def real_logs_dir() -> Path:
    """The shared corpus of real training logs (skips the test when it is absent)."""
    if not REAL_LOGS.is_dir():
        pytest.skip(f"real-logs corpus not found at {REAL_LOGS}")
    return REAL_LOGS
