"""The disk spool: encoded envelopes that could not reach the broker, kept for replay.

Layout: ``DATA_DIR/spool/<broker>/`` (``<broker>`` is a hash of the bootstrap
servers, so a spool is only replayed into the deployment it was meant for),
holding segment files ``<ns>-<pid>-<rand>.spool`` written whole to a
``.tmp`` name and renamed, so a reader never sees half a segment.  A segment
is a sequence of frames, each a 4-byte big-endian length and a MessagePack
map ``{"topic", "key", "value", "kind", "producer", "start", "count"}``.

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

import os
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from producers.identity import stable_id
from runstream.errors import DecodeError
from runstream.settings import Settings
from runstream.wire import pack, unpack

_FRAME = struct.Struct(">I")
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


class DiskSpool:
    """A bounded directory of spool segments (safe for several processes at once)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

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
        room = self.max_bytes - self.size_bytes()
        frames: list[bytes] = []
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
            frame = _FRAME.pack(len(body)) + body
            if len(frame) > room:
                break
            room -= len(frame)
            frames.append(frame)
        if not frames:
            return 0
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{_SUFFIX}"
        tmp = self.directory / (name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(b"".join(frames))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / name)
        return len(frames)

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

    @staticmethod
    def read(path: Path) -> Iterator[SpoolEntry]:
        """The entries of a claimed segment, in order; stops at a damaged frame."""
        data = path.read_bytes()
        pos = 0
        while pos + _FRAME.size <= len(data):
            (size,) = _FRAME.unpack_from(data, pos)
            body = data[pos + _FRAME.size : pos + _FRAME.size + size]
            pos += _FRAME.size + size
            if len(body) < size:
                return
            try:
                doc = unpack(body)
                yield SpoolEntry(
                    topic=str(doc["topic"]),
                    key=bytes(doc["key"]),
                    value=bytes(doc["value"]),
                    kind=str(doc.get("kind", "")),
                    producer=str(doc.get("producer", "")),
                    start=int(doc.get("start", 0)),
                    count=int(doc.get("count", 0)),
                )
            except (DecodeError, KeyError, TypeError, ValueError):
                return

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
