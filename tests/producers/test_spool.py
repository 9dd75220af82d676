"""The disk spool: checksummed segments, recovery of damaged ones, its bound, durable writes."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from sdk_support import read_envelopes, scaled, valid_records

from producers.batch import Batcher
from producers.buffer import Buffer
from producers.options import Options
from producers.sender import Sender
from producers.spool import MAGIC, DiskSpool, SpoolEntry, read_segment
from runstream import settings as settings_mod
from runstream.topics import Topics
from runstream.wire import pack


def _entries(n: int, size: int = 100) -> list[SpoolEntry]:
    return [SpoolEntry("t", b"k", bytes([i % 256]) * size, "metrics", "p", i, 1) for i in range(n)]


def _segment(spool: DiskSpool) -> Path:
    (path,) = list(spool.directory.iterdir())
    return path


def test_segment_round_trips(tmp_path: Path) -> None:
    """What is written is read back, in order, with nothing counted as dropped."""
    spool = DiskSpool(tmp_path, 1 << 20)
    assert spool.write(_entries(5)) == 5
    path = _segment(spool)
    assert path.read_bytes().startswith(MAGIC)
    assert list(spool.read(path)) == _entries(5)
    assert (spool.dropped_bytes, spool.damaged_segments) == (0, 0)


def test_truncated_tail_keeps_every_whole_record(tmp_path: Path) -> None:
    """A segment cut mid-record yields the records before the cut; the partial one is counted dropped."""
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.write(_entries(5))
    path = _segment(spool)
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    assert list(spool.read(path)) == _entries(4)
    frame = (len(data) - len(MAGIC)) // 5
    assert (spool.damaged_segments, spool.dropped_bytes) == (1, frame - 30)


def test_garbage_appended_is_dropped_and_counted(tmp_path: Path) -> None:
    """Bytes appended after the last record are dropped, counted exactly, the records all kept."""
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.write(_entries(3))
    path = _segment(spool)
    with open(path, "ab") as fh:
        fh.write(b"\x00\x00\x00\x10garbage-garbage-garbage")
    assert list(spool.read(path)) == _entries(3)
    assert spool.dropped_bytes == 4 + len(b"garbage-garbage-garbage")


def test_flipped_bit_stops_at_the_damaged_record(tmp_path: Path) -> None:
    """A corrupted byte inside the third record fails its checksum: the first two are recovered."""
    spool = DiskSpool(tmp_path, 1 << 20)
    spool.write(_entries(5))
    path = _segment(spool)
    data = bytearray(path.read_bytes())
    frame = (len(data) - len(MAGIC)) // 5
    data[len(MAGIC) + 2 * frame + frame // 2] ^= 0x40
    path.write_bytes(bytes(data))
    assert list(spool.read(path)) == _entries(2)
    assert spool.dropped_bytes == 3 * frame


def test_segment_without_checksums_is_still_read() -> None:
    """A segment from before checksums (plain length-prefixed frames) is read as it was."""
    body = pack({"topic": "t", "key": b"k", "value": b"v", "kind": "logs", "producer": "p", "start": 0, "count": 1})
    data = len(body).to_bytes(4, "big") + body
    got = read_segment(data * 2 + b"\x00\x00")
    assert [e.value for e in got.entries] == [b"v", b"v"]
    assert got.dropped_bytes == 2


def test_write_respects_the_bound(tmp_path: Path) -> None:
    """Entries that would take the directory over ``max_bytes`` are left out and reported."""
    spool = DiskSpool(tmp_path, 2000)
    first = spool.write(_entries(10, size=150))
    assert 0 < first < 10
    assert spool.size_bytes() <= 2000
    assert spool.write(_entries(10, size=150)) == 0
    assert spool.size_bytes() <= 2000


def test_write_is_durable_before_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each write fsyncs the segment and then its directory: no unsynced window at all."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", spy)
    spool = DiskSpool(tmp_path / "spool", 1 << 20)
    spool.write(_entries(2))
    segment = _segment(spool)
    assert synced == [str(segment) + ".tmp", str(spool.directory)]


def test_outage_spools_envelopes_to_disk(tmp_path: Path) -> None:
    """During an outage, after ``spool_after_s`` the sender writes what it holds to a spool segment."""
    settings = settings_mod.load({"kafka": "127.0.0.1:9", "data_dir": str(tmp_path)}, environ={})
    options = Options(spool_after_s=0.2, retry_initial_s=0.05, retry_max_s=0.1, request_timeout_ms=500)
    buffer = Buffer(options.bounds())
    spool = DiskSpool.for_settings(settings, 1 << 20)
    sender = Sender(
        buffer,
        Batcher(producer="p", run="r", node="n", rank=0),
        settings=settings,
        options=options,
        key=b"r",
        spool=spool,
    )
    sender.start()
    try:
        for step in range(10):
            buffer.put("metrics", (time.time_ns(), step, {"x": 1.0}))
        deadline = time.monotonic() + scaled(10)
        while buffer.stats()["spooled"]["metrics"] < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert buffer.stats()["spooled"]["metrics"] == 10
        (segment,) = spool.directory.iterdir()
        assert [e.count for e in spool.read(segment)] == [10]
    finally:
        sender.close(0.1)


def test_damaged_segment_is_replayed_up_to_the_damage(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """``sync`` sends a truncated segment's good envelopes, then deletes it."""
    from producers.run import sync

    settings = settings_mod.load({"kafka": sdk_broker, "data_dir": str(tmp_path)}, environ={})
    spool = DiskSpool.for_settings(settings, 1 << 20)
    old = Batcher(producer="2" * 32, run="damaged", node="n", rank=0, max_records=5)
    built = old.build("metrics", 0, [(time.time_ns(), i, {"x": float(i)}) for i in range(15)])
    spool.write([SpoolEntry(sdk_topics.raw("metrics"), b"damaged", b.value) for b in built.batches])
    path = _segment(spool)
    path.write_bytes(path.read_bytes()[:-7])
    assert sync(settings, scaled(20)) == 2
    found = asyncio.run(
        read_envelopes(sdk_broker, sdk_topics, ("metrics",), lambda f: len(f["metrics"]) >= 2, scaled(20))
    )
    assert [r["step"] for r in valid_records(found["metrics"])] == list(range(10))
    assert not list(spool.directory.iterdir())
