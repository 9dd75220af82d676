"""Record batches compressed by this process use the transport's zstd level."""

from __future__ import annotations

import cramjam
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from runstream import kafka

_CODEC_ZSTD = 4
_HEADER_BYTES = _DefaultRecordBatchBuilderPy.HEADER_STRUCT.size  # the C builder writes the same header


def _batch(compression: int, values: list[bytes]) -> bytes:
    builder = BatchBuilder(1 << 20, compression)
    for value in values:
        builder.append(timestamp=1_700_000_000_000, key=b"run", value=value)
    return bytes(builder._build())


def test_zstd_record_batches_are_compressed_at_the_transport_level() -> None:
    """A zstd record batch built by aiokafka holds its records compressed at ``ZSTD_LEVEL``, not aiokafka's 3."""
    values = [f"step {i} loss={1 / (i + 1):.6f} lr=3e-4 it/s=12.{i % 10}".encode() * 8 for i in range(400)]
    records = _batch(0, values)[_HEADER_BYTES:]
    payload = _batch(_CODEC_ZSTD, values)[_HEADER_BYTES:]
    assert payload == bytes(cramjam.zstd.compress(records, level=kafka.ZSTD_LEVEL))
    assert payload != bytes(cramjam.zstd.compress(records, level=3))
    assert bytes(cramjam.zstd.decompress(payload)) == records
