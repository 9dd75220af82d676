"""A minimal ASGI client for the tests: one HTTP request in, the whole answer out.

The app's middleware is plain ASGI, so driving it directly exercises the same
code a server would, without an HTTP client dependency.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.types import ASGIApp, Message

DEFAULT_HOST = "127.0.0.1:8080"


@dataclass
class Answer:
    """One HTTP answer: status, headers (lower-cased names, last value wins) and body."""

    status: int
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, refusing NaN/Infinity (which are not JSON)."""

        def refuse(name: str) -> Any:
            raise ValueError(f"{name} is not valid JSON")

        return json.loads(self.body, parse_constant=refuse)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


async def get(
    app: ASGIApp,
    path: str,
    params: dict[str, Any] | list[tuple[str, Any]] | None = None,
    *,
    headers: dict[str, str] | None = None,
    host: str = DEFAULT_HOST,
    method: str = "GET",
) -> Answer:
    """Send one request to ``app`` and collect its answer."""
    items = list(params.items()) if isinstance(params, dict) else list(params or [])
    query = urlencode([(k, v) for k, v in items if v is not None])
    raw = [(b"host", host.encode())] + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent = False
    messages: list[Message] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # The client stays connected until the answer is complete.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    pairs = [(k.decode().lower(), v.decode()) for k, v in start.get("headers", [])]
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Answer(start["status"], dict(pairs), pairs, body)
