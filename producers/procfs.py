"""Cheap Linux ``/proc`` readers for the resource sampler (:mod:`producers.sampler`).

The sampler runs for the whole life of a training job, so its per-sample
cost counts: psutil's general readers (``virtual_memory``,
``disk_io_counters``, ``net_io_counters``, ``Process.oneshot``) parse more
than the sampler needs and probe ``/sys`` for every disk at every call,
~520 µs of CPU per host sample where these take ~150 µs.  Each reader
returns the same numbers as the psutil call it replaces (same files, same
units) and raises ``OSError`` or ``ValueError`` when the file is missing or
unexpected; :data:`AVAILABLE` says whether to use them at all (Linux with
``/proc``), and the sampler falls back to psutil otherwise.
"""

from __future__ import annotations

import os
import sys

#: Whether this platform has the ``/proc`` files these readers parse.
AVAILABLE = sys.platform.startswith("linux") and os.path.exists("/proc/self/stat")

_TICKS_PER_S = float(os.sysconf("SC_CLK_TCK")) if AVAILABLE else 100.0
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if AVAILABLE else 4096
#: As psutil: /proc/diskstats counts 512-byte sectors whatever the device's own sector size.
_SECTOR_BYTES = 512


def cpu_busy_total() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, as the sampler derives them from psutil.

    ``total`` leaves out guest time (already inside user time); ``busy`` is
    ``total`` less idle and iowait.
    """
    with open("/proc/stat", "rb") as f:
        line = f.readline()
    ticks = [int(x) for x in line.split()[1:]]
    if len(ticks) < 4:
        raise ValueError("unexpected /proc/stat")
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal; guest* excluded
    busy = total - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / _TICKS_PER_S, total / _TICKS_PER_S


def memory_used_total() -> tuple[float, float]:
    """(total - available, total) bytes of memory, from ``MemTotal`` and ``MemAvailable``.

    Raises ``ValueError`` on a kernel without ``MemAvailable`` (psutil estimates it there).
    """
    total = avail = -1
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            if line.startswith(b"MemTotal:"):
                total = int(line.split()[1]) * 1024
            elif line.startswith(b"MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    if total < 0 or avail < 0:
        raise ValueError("no MemAvailable in /proc/meminfo")
    return float(total - avail), float(total)


class DiskTotals:
    """Bytes read and written by the whole disks (not their partitions), as psutil sums them."""

    def __init__(self) -> None:
        # Whether a /proc/diskstats name is a whole device (/sys/block/NAME exists); devices
        # rarely come and go, so the answer is kept instead of probing /sys every sample.
        self._whole: dict[bytes, bool] = {}

    def read(self) -> tuple[float, float]:
        """(read bytes, written bytes) since boot."""
        rd = wr = 0
        whole = self._whole
        with open("/proc/diskstats", "rb") as f:
            lines = f.read().splitlines()
        for line in lines:
            fields = line.split()
            n = len(fields)
            if n == 14 or n >= 18:
                name, r, w = fields[2], fields[5], fields[9]
            elif n == 7:
                name, r, w = fields[2], fields[4], fields[6]
            elif n == 15:
                name, r, w = fields[3], fields[6], fields[10]
            else:
                continue
            is_whole = whole.get(name)
            if is_whole is None:
                if len(whole) > 4096:  # bounded even on a host that keeps making devices
                    whole.clear()
                path = b"/sys/block/" + name.replace(b"/", b"!")
                is_whole = whole[name] = os.access(path, os.F_OK)
            if is_whole:
                rd += int(r)
                wr += int(w)
        return float(rd * _SECTOR_BYTES), float(wr * _SECTOR_BYTES)


def net_totals() -> tuple[float, float]:
    """(bytes sent, bytes received) by every network interface, loopback included, as psutil sums them."""
    sent = recv = 0
    with open("/proc/net/dev", "rb") as f:
        lines = f.read().splitlines()[2:]
    for line in lines:
        _, _, counters = line.rpartition(b":")
        fields = counters.split()
        if len(fields) >= 9:
            recv += int(fields[0])
            sent += int(fields[8])
    return float(sent), float(recv)


def process_stat(pid: int) -> tuple[float, float, int]:
    """(user + system CPU seconds, RSS bytes, start time in ticks) of ``pid`` from ``/proc/PID/stat``.

    The start time tells a process from a later one that reuses its pid.
    Raises ``OSError`` when the process is gone.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()  # the name may hold spaces and parentheses
    # Field numbers of proc(5) less 3: utime 14, stime 15, starttime 22, rss 24.
    cpu_s = (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
    return cpu_s, float(int(fields[21]) * _PAGE_BYTES), int(fields[19])
