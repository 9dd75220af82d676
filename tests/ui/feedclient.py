"""Test helpers: put clean envelopes on a server's topics, and read the feed over a real websocket."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from runstream import kafka, wire
from tests.conftest import scaled
from tests.ui.conftest import TOKEN, Server


class Bus(Protocol):
    """Where an :class:`Emitter` writes: a broker and the topic names (a :class:`Server` is one)."""

    kafka: str
    topics: Any


@dataclass
class Broker:
    """A broker and topic names with no server started on them yet."""

    kafka: str
    topics: Any


class Emitter:
    """One producer writing validated ("clean") envelopes for one run, as the stream processors do."""

    def __init__(self, server: Bus, run: str, node: str = "node-0", rank: int = 0) -> None:
        self.server = server
        self.run = run
        self.node = node
        self.rank = rank
        self.producer_id = uuid.uuid4().hex[:12]
        self.seq = 0
        self._producer: Any = None

    async def __aenter__(self) -> Emitter:
        self._producer = kafka.make_producer(self.server.kafka, linger_ms=0)
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, kind: str, records: list[dict[str, Any]], topic: str | None = None) -> None:
        """One envelope of ``records`` on the clean topic of ``kind`` (or on ``topic``)."""
        for i, r in enumerate(records):
            r.setdefault("i", i)
            r.setdefault("ts_ns", time.time_ns())
        env = wire.Envelope(
            kind=kind,
            producer=self.producer_id,
            seq=self.seq,
            run=self.run,
            node=self.node,
            rank=self.rank,
            sent_ns=time.time_ns(),
            records=records,
            ingest_ns=time.time_ns(),
        )
        self.seq += 1
        await self._producer.send_and_wait(
            topic or self.server.topics.clean(kind), wire.encode(env), key=self.run.encode()
        )

    async def lines(self, lines: list[str], level: str = "INFO", stream: str = "stdout") -> None:
        await self.send("logs", [{"line": line, "level": level, "stream": stream} for line in lines])

    async def metric(self, step: int, values: dict[str, float]) -> None:
        await self.send("metrics", [{"step": step, "values": values}])


def connect(server: Server, **options: Any) -> Any:
    """A websocket client connection to the feed, with the token in the Authorization header."""
    from websockets.asyncio.client import connect as ws_connect

    headers = options.pop("additional_headers", {"Authorization": f"Bearer {TOKEN}"})
    return ws_connect(server.ws_url, additional_headers=headers, **options)


async def subscribe(ws: Any, run: str, stream: str = "logs", sub: str = "s1", **extra: Any) -> None:
    await ws.send(json.dumps({"op": "subscribe", "sub": sub, "run": run, "stream": stream, **extra}))


async def collect(
    ws: Any, until: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 20.0
) -> list[dict[str, Any]]:
    """Frames received until ``until(frames)`` holds; raises TimeoutError after ``timeout_s`` (scaled)."""
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(scaled(timeout_s)):
            while not until(frames):
                frames.append(json.loads(await ws.recv()))
    except TimeoutError:
        kinds = [(f.get("type"), len(f.get("items") or [])) for f in frames]
        raise TimeoutError(f"after {len(frames)} frames {kinds[-20:]}") from None
    return frames


def items(frames: list[dict[str, Any]], sub: str = "s1") -> list[dict[str, Any]]:
    return [i for f in frames if f.get("sub") == sub and f.get("items") for i in f["items"]]


def lines_of(frames: list[dict[str, Any]], sub: str = "s1") -> list[str]:
    return [i["line"] for i in items(frames, sub)]


def has_lines(n: int, sub: str = "s1") -> Callable[[list[dict[str, Any]]], bool]:
    return lambda frames: len(lines_of(frames, sub)) >= n


async def stored_lines(server: Server, run: str, at_least: int, timeout_s: float = 30.0) -> int:
    """How many of ``run``'s log lines the sink stored, once at least ``at_least``; TimeoutError after ``timeout_s``."""

    def count() -> int:
        request = urllib.request.Request(
            f"{server.url}/api/runs/{run}/logs?limit=10000", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=scaled(10)) as answer:
                return len(json.loads(answer.read()).get("lines") or [])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # nothing of the run stored yet
                return 0
            raise

    async with asyncio.timeout(scaled(timeout_s)):
        while (stored := await asyncio.to_thread(count)) < at_least:
            await asyncio.sleep(0.05)
    return stored


class RawSlowClient:
    """A websocket client on a bare socket that subscribes and then never reads (a stalled browser tab).

    Its receive buffer is kept small, so the server's writes back up quickly.
    """

    def __init__(self, server: Server, subscribe_message: dict[str, Any]) -> None:
        import base64
        import os
        import socket

        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(scaled(10))
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {head[:100]!r}")
        self.sock.sendall(self._frame(json.dumps(subscribe_message).encode()))

    @staticmethod
    def _frame(payload: bytes) -> bytes:
        import os
        import struct

        mask = os.urandom(4)
        size = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + struct.pack("!H", size))
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def read_all(self, quiet_s: float = 2.0) -> bytes:
        """Everything the server sent, read until it has been quiet for ``quiet_s`` (scaled)."""
        self.sock.settimeout(scaled(quiet_s))
        data = bytearray()
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def close(self) -> None:
        self.sock.close()
