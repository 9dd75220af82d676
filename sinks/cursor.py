"""Opaque log-search cursors: the order key of the last row a page returned."""

from __future__ import annotations

import base64
import binascii
import json

from runstream.errors import QueryError

_MAX_ID_CHARS = 128


def encode_cursor(ts_us: int, producer: str, seq: int, idx: int) -> str:
    """An opaque cursor naming one log row by its order key (ts, producer, seq, idx)."""
    raw = json.dumps([ts_us, producer, seq, idx], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, int, int]:
    """The row a cursor names; raises :class:`QueryError` for anything this server did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts_us, producer, seq, idx = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise QueryError("cursor is not one this server returned") from None
    ok = (
        all(isinstance(v, int) and not isinstance(v, bool) for v in (ts_us, seq, idx))
        and isinstance(producer, str)
        and len(producer) <= _MAX_ID_CHARS
        and -(2**62) <= ts_us < 2**62
        and 0 <= seq < 2**64
        and 0 <= idx < 2**32
    )
    if not ok:
        raise QueryError("cursor is not one this server returned")
    return ts_us, producer, seq, idx
