"""What the typed-decoder tests share: raw messages, both paths through ``process``, and their outcomes compared.

A typed decoder (:mod:`streams.fastdecode`) must change nothing: the same
raw message through ``process`` with its kind (typed path first) and without
(general path only) must give the same outcome.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from runstream import wire
from runstream.events import Limits
from streams.validate import Outcome, process

TS = 1_795_428_000 * 1_000_000_000
MIN_TS = 946_684_800 * 1_000_000_000

#: Any integer MessagePack holds.
INTS = st.integers(-(2**63), 2**64 - 1)
#: At most one envelope field replaced by something odd (or added: ``ingest_ns``, ``later``).
FRAMING = st.dictionaries(
    st.sampled_from(["v", "kind", "producer", "seq", "rank", "v_minor", "ingest_ns", "later"]),
    st.sampled_from([1, 2, True, "1", "logs", "metrics", "", "q" * 129, 0, -1, "x", [1]]),
    max_size=1,
)


def mostly_plain(plain: st.SearchStrategy[Any], record: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """Lists of records: mostly plain batches with at most one doubtful record (so that one doubt decides
    which path is taken), or batches of any records."""
    one_doubt = st.tuples(st.lists(plain, max_size=5), st.lists(record | INTS | st.none(), max_size=1))
    return one_doubt.map(lambda parts: parts[0] + parts[1]) | st.lists(record, max_size=6)


def raw(kind: str, records: list[Any], framing: dict[str, Any]) -> bytes:
    """A raw ``kind`` message of ``records`` from producer ``p`` of run ``run1``, ``framing`` laid over it."""
    doc = wire.Envelope(
        kind=kind, producer="p", seq=0, run="run1", node="n", rank=0, sent_ns=TS, records=records
    ).to_map()
    doc.update(framing)
    return wire.pack(doc)


def both_paths(value: bytes, kind: str, limits: Limits) -> tuple[Outcome, Outcome]:
    """``process`` of ``value`` read from the raw ``kind`` topic: offered to the typed decoder first, and not."""

    def run(hint: str | None) -> Outcome:
        return process(value, topic=f"runstream.{kind}", partition=1, offset=42, limits=limits, ingest_ns=TS, kind=hint)

    return run(kind), run(None)


def _canon(doc: Any) -> Any:
    """``doc`` with every map's items sorted (field order aside) and floats as their repr (NaN, -0.0)."""
    if isinstance(doc, dict):
        return sorted((repr(k), _canon(v)) for k, v in doc.items())
    if isinstance(doc, list):
        return [_canon(v) for v in doc]
    return repr(doc)


def view(out: Outcome) -> Any:
    """Everything an outcome says, in canonical form: the clean envelope decoded, the metrics envelope as bytes."""
    return _canon(
        [
            out.key,
            wire.unpack(out.clean) if out.clean else None,
            out.clean_records,
            out.dead,
            dict(out.discarded),
            dict(out.flagged),
            out.metrics,
            out.metric_records,
        ]
    )
