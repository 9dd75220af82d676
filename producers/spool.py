"""The disk spool: encoded envelopes that could not reach the broker, kept for replay.

Layout: ``DATA_DIR/spool/<broker>/`` (``<broker>`` is a hash of the bootstrap
servers, so a spool is only replayed into the deployment it was meant for),
holding segment files ``<ns>-<pid>-<rand>.spool`` written whole to a
``.tmp`` name, fsynced, renamed and the directory fsynced, so a reader never
sees half a segment and a segment :meth:`DiskSpool.write` returned for
survives a crash or power loss (every write is durable before it returns:
there is no write-back window).  A segment is the 8-byte header
``RSPOOL1\n`` then frames, each a 4-byte big-endian length, the CRC-32 of
the body (4 bytes, big-endian) and the body, a MessagePack map ``{"topic",
"key", "value", "kind", "producer", "start", "count"}``.  Segments without
the header (written before checksums) are read frame by frame without one.

A damaged segment (cut short, garbage appended, a flipped bit) is recovered
up to its last good frame; the rest is dropped, counted in
:attr:`DiskSpool.dropped_bytes` / :attr:`DiskSpool.damaged_segments` and
logged once per segment.

Replay (the next SDK process once it reaches the broker, or ``runstream
sync``) claims a segment by renaming it to ``…spool.claimed-<pid>`` (atomic:
two replayers never send the same segment), deletes it once every frame is
acknowledged, and renames it back otherwise.  A claim left by a dead process
is taken over.  Envelopes keep their producer and seq, so a segment replayed
twice is still stored once.

Bound: ``max_bytes`` per directory; a segment that would go over it is cut
and the envelopes left out are counted as lost by the caller.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from producers.identity import stable_id
from runstream.errors import DecodeError
from runstream.settings import Settings
from runstream.wire import pack, unpack

log = logging.getLogger("runstream.sdk")

_FRAME = struct.Struct(">I")
_CHECKED_FRAME = struct.Struct(">II")  # length, CRC-32 of the body
#: First bytes of a segment whose frames carry checksums.
MAGIC = b"RSPOOL1\n"
_SUFFIX = ".spool"
_CLAIM = ".claimed-"


@dataclass(frozen=True)
class SpoolEntry:
    """One envelope as it was to be sent, and which buffer positions it carried."""

    topic: str
    key: bytes
    value: bytes
    kind: str = ""
    producer: str = ""
    start: int = 0
    count: int = 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class SegmentRead:
    """What :func:`read_segment` recovered from one segment."""

    entries: list[SpoolEntry] = field(default_factory=list)
    #: Bytes after the last good frame (cut-short frame, bad checksum, garbage).
    dropped_bytes: int = 0


def _entry(body: bytes) -> SpoolEntry:
    doc = unpack(body)
    return SpoolEntry(
        topic=str(doc["topic"]),
        key=bytes(doc["key"]),
        value=bytes(doc["value"]),
        kind=str(doc.get("kind", "")),
        producer=str(doc.get("producer", "")),
        start=int(doc.get("start", 0)),
        count=int(doc.get("count", 0)),
    )


def read_segment(data: bytes) -> SegmentRead:
    """The entries of a segment's bytes up to the first damaged frame (pure, never raises)."""
    out = SegmentRead()
    checked = data.startswith(MAGIC)
    frame = _CHECKED_FRAME if checked else _FRAME
    pos = len(MAGIC) if checked else 0
    while pos < len(data):
        if pos + frame.size > len(data):
            break
        if checked:
            size, crc = _CHECKED_FRAME.unpack_from(data, pos)
        else:
            (size,), crc = _FRAME.unpack_from(data, pos), None
        end = pos + frame.size + size
        body = data[pos + frame.size : end]
        if len(body) < size or (crc is not None and zlib.crc32(body) != crc):
            break
        try:
            entry = _entry(body)
        except (DecodeError, KeyError, TypeError, ValueError):
            break
        out.entries.append(entry)
        pos = end
    out.dropped_bytes = len(data) - pos
    return out


class DiskSpool:
    """A bounded directory of spool segments (safe for several processes at once)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        #: Bytes dropped from damaged segments read by this object, and how many segments.
        self.dropped_bytes = 0
        self.damaged_segments = 0

    @classmethod
    def for_settings(cls, settings: Settings, max_bytes: int) -> DiskSpool:
        """The spool of ``settings``' data directory for its broker."""
        return cls(settings.data_path / "spool" / stable_id("kafka", settings.kafka), max_bytes)

    def size_bytes(self) -> int:
        """Bytes held in segments, claimed ones included."""
        total = 0
        try:
            for entry in os.scandir(self.directory):
                if _SUFFIX in entry.name and not entry.name.endswith(".tmp"):
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:
                        pass
        except FileNotFoundError:
            return 0
        return total

    def write(self, entries: list[SpoolEntry]) -> int:
        """Write ``entries`` as one segment; return how many fit under the bound.

        Blocks on disk I/O; raises ``OSError`` when the directory cannot be written.
        """
        if not entries:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        room = self.max_bytes - self.size_bytes() - len(MAGIC)
        frames: list[bytes] = [MAGIC]
        for e in entries:
            body = pack(
                {
                    "topic": e.topic,
                    "key": e.key,
                    "value": e.value,
                    "kind": e.kind,
                    "producer": e.producer,
                    "start": e.start,
                    "count": e.count,
                }
            )
            frame = _CHECKED_FRAME.pack(len(body), zlib.crc32(body)) + body
            if len(frame) > room:
                break
            room -= len(frame)
            frames.append(frame)
        if len(frames) == 1:
            return 0
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
        tmp = self.directory / (name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(b"".join(frames))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / name)
        _fsync_dir(self.directory)  # the rename itself must survive a power loss
        return len(frames) - 1

    def claim(self) -> list[Path]:
        """Claim every free segment (and those of dead claimants), oldest first."""
        claimed: list[Path] = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        me = os.getpid()
        for name in names:
            if name.endswith(_SUFFIX):
                base = name
            elif _CLAIM in name:
                base, _, pid = name.partition(_CLAIM)
                if not pid.isdigit() or int(pid) == me or _pid_alive(int(pid)):
                    continue
            else:
                continue
            target = self.directory / f"{base}{_CLAIM}{me}"
            try:
                os.rename(self.directory / name, target)
            except FileNotFoundError:
                continue  # another process claimed it first
            claimed.append(target)
        return claimed

    def read(self, path: Path) -> Iterator[SpoolEntry]:
        """The entries of a claimed segment, in order, up to its first damaged frame.

        Damage is counted (:attr:`dropped_bytes`, :attr:`damaged_segments`) and
        logged.  Raises ``OSError`` when the segment cannot be read.
        """
        got = read_segment(path.read_bytes())
        if got.dropped_bytes:
            self.dropped_bytes += got.dropped_bytes
            self.damaged_segments += 1
            log.warning(
                "Spool segment damaged; kept what precedes the damage. segment=%s kept_envelopes=%d dropped_bytes=%d",
                path.name,
                len(got.entries),
                got.dropped_bytes,
            )
        return iter(got.entries)

    @staticmethod
    def done(path: Path) -> None:
        """Delete a claimed segment whose entries were all acknowledged."""
        path.unlink(missing_ok=True)

    @staticmethod
    def release(path: Path) -> None:
        """Give a claimed segment back for a later replay."""
        base = path.name.partition(_CLAIM)[0]
        try:
            os.rename(path, path.with_name(base))
        except FileNotFoundError:
            pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)
