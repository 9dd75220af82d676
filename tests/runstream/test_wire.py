"""The wire envelope: round trips, versioning, refusal of malformed input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream import wire
from runstream.errors import DecodeError, UnsupportedVersion


def _env(**over: object) -> wire.Envelope:
    base = dict(
        kind="metrics",
        producer="p1",
        seq=3,
        run="r1",
        node="n1",
        rank=0,
        sent_ns=1,
        records=[{"ts_ns": 1, "step": 1, "values": {"loss": float("nan"), "x": float("inf")}}],
    )
    base.update(over)
    return wire.Envelope(**base)  # type: ignore[arg-type]


def test_round_trip_keeps_nan_and_inf_exactly() -> None:
    """NaN and ±Inf survive encode/decode bit for bit."""
    env = wire.decode(wire.encode(_env()))
    values = env.records[0]["values"]
    assert math.isnan(values["loss"]) and values["x"] == math.inf
    assert (env.kind, env.producer, env.seq, env.run) == ("metrics", "p1", 3, "r1")


def test_unknown_minor_version_is_read_and_extra_fields_kept() -> None:
    """A newer minor version with unknown fields still decodes."""
    doc = _env().to_map()
    doc["v_minor"] = 7
    doc["future_field"] = {"a": 1}
    env = wire.decode(wire.pack(doc))
    assert env.v_minor == 7 and env.extra == {"future_field": {"a": 1}}


def test_unknown_major_version_is_unsupported() -> None:
    """An unknown major version is refused as unsupported, not as garbage."""
    doc = _env().to_map()
    doc["v"] = 2
    with pytest.raises(UnsupportedVersion):
        wire.decode(wire.pack(doc))


@pytest.mark.parametrize(
    "mutation",
    [
        {"kind": "bogus"},
        {"seq": -1},
        {"run": ""},
        {"records": "nope"},
        {"producer": 5},
        {"rank": "0"},
        {"run": "x" * 200},
    ],
)
def test_malformed_envelopes_are_refused(mutation: dict[str, object]) -> None:
    """Each malformed framing field raises DecodeError."""
    doc = _env().to_map()
    doc.update(mutation)
    with pytest.raises(DecodeError):
        wire.decode(wire.pack(doc))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decoder_survives_any_bytes(data: bytes) -> None:
    """Any byte sequence either decodes or raises DecodeError; nothing else."""
    try:
        wire.decode(data)
    except DecodeError:
        pass
