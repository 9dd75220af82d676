"""JSON answers: compact, always valid JSON, errors as ``{"error": "..."}``.

orjson is used when installed (it writes NaN and ±Inf as ``null``); the
standard library fallback refuses them instead of writing invalid JSON.  The
query layer already turns non-finite metric values into strings, so neither
case is expected.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional
    orjson = None  # type: ignore[assignment]


def dumps(content: Any) -> bytes:
    """``content`` as UTF-8 JSON bytes; raises ``TypeError``/``ValueError`` if it cannot be."""
    if orjson is not None:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


class JSON(JSONResponse):
    """A JSON answer rendered by :func:`dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error_response(status_code: int, message: str) -> JSON:
    """The error answer every 4xx/5xx uses: ``{"error": message}``."""
    return JSON({"error": message}, status_code=status_code)
