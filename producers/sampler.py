"""Resource samples of the host, the trainer's process tree and the GPUs, off the training thread.

:class:`Sampler` takes one sample: a list of ``resources`` records
``{"ts_ns", "device", "values"}``, one for ``host`` (always) and one per GPU
(``gpu0``, ``gpu1``, ... by NVML index) whose readings succeeded.
:class:`SamplerThread` takes the first sample when it starts and then one
every ``interval_s`` on a daemon thread, handing each record to a ``put``
callable (the run's bounded buffer, where ``resources`` is the kind dropped
first under pressure).

Values (names carry their unit; every value is a finite float, or NaN):

``host``
    ``cpu_pct`` (all cores, 0..100), ``mem_used_bytes`` (total - available),
    ``mem_total_bytes``; the process tree rooted at ``root_pid``:
    ``proc_rss_bytes`` (sum of RSS: shared pages count once per process),
    ``proc_cpu_pct`` (100 = one core busy, like ``top``), ``proc_count``;
    ``disk_read_bytes_per_s``, ``disk_write_bytes_per_s``,
    ``net_sent_bytes_per_s``, ``net_recv_bytes_per_s`` (machine-wide).  Rates
    and CPU percentages need two readings, so the first sample lacks them.
``gpuN``
    The groups of :mod:`producers.nvml` (``util_pct``, ``mem_used_bytes``,
    ``power_w``, ``temp_c``, ``sm_clock_mhz``, ...), ``proc_mem_used_bytes``
    (GPU memory of the process tree's processes, as NVML lists them: in a
    container whose PID namespace differs from the driver's, no pid matches
    and this reads 0), and, once the trainer has imported ``torch`` and
    initialised CUDA, ``torch_allocated_bytes``, ``torch_reserved_bytes`` and
    ``torch_max_allocated_bytes`` of this process (torch is never imported
    here).  A torch device whose UUID matches no NVML device is reported as
    ``cudaN`` (its CUDA index).

Several ranks on one node: only one of them should read the node-wide
values (GPU groups, host CPU, memory, disk and network), or every chart
shows the same GPUs once per rank.  A sampler made with ``node_wide=False``
(:attr:`producers.options.Options.sample_node_wide`; by default every rank
but local rank 0) reports only what is its own: ``proc_rss_bytes``,
``proc_cpu_pct`` and ``proc_count`` of its process tree on ``host``, and
torch's allocator stats of its GPUs (NVML is still opened, once, to name
those GPUs by UUID; no GPU is read).

No NVML, no driver or no GPU: one warning at start (logger
``runstream.sdk``), then host samples only.  A GPU reading the device does
not support is switched off for that device at the first refusal and never
asked for again; any other failed reading is left out of that sample and
tried again at the next.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from producers import procfs
from producers.nvml import GROUPS, FieldUnsupported, GpuBackend, GpuError, GpuUnavailable

log = logging.getLogger("runstream.sdk")

Record = dict[str, Any]

#: The process tree is walked again at least every this many samples (new processes,
#: such as data loader workers, show up within that many intervals; exits at once).
TREE_WALK_EVERY = 5


def _num(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else math.nan


class _Rates:
    """Per-second rates of monotonically growing counters (None until two readings)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def rate(self, name: str, value: float, now_s: float) -> float | None:
        prev = self._last.get(name)
        self._last[name] = (value, now_s)
        if prev is None or now_s <= prev[1] or value < prev[0]:  # first, or the counter was reset
            return None
        return (value - prev[0]) / (now_s - prev[1])


class HostProbe:
    """Host-wide and process-tree readings from ``/proc`` (:mod:`producers.procfs`), through psutil where
    those readers are unavailable (blocks on /proc reads only)."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self._rates = _Rates()
        self._cpu_last: tuple[float, float] | None = None
        #: pid -> (process or its start time in ticks, its user+system CPU seconds at the previous sample).
        self._procs: dict[int, tuple[Any, float]] = {}
        self._proc_last_s: float | None = None
        self.tree_pids: set[int] = set()
        #: Samples left before the process tree is walked again (0: walk at the next one).
        self._walk_in = 0
        self._disks = procfs.DiskTotals() if procfs.AVAILABLE else None

    def read(self, now_s: float, node_wide: bool = True) -> dict[str, float]:
        """One host reading; ``now_s`` is a monotonic clock for the rates. Never raises.

        Without ``node_wide``, only the process tree's readings.
        """
        values: dict[str, float] = {}
        parts = (self._cpu, self._memory, self._tree, self._io) if node_wide else (self._tree,)
        for part in parts:
            try:
                part(values, now_s)
            except Exception:  # noqa: BLE001, S112 - a reading the host cannot give is left out
                continue
        return values

    def _cpu(self, values: dict[str, float], now_s: float) -> None:
        if procfs.AVAILABLE:
            busy, total = procfs.cpu_busy_total()
        else:
            t = psutil.cpu_times()
            # As psutil does: guest time is already inside user time on Linux.
            total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
            busy = total - t.idle - getattr(t, "iowait", 0.0)
        last, self._cpu_last = self._cpu_last, (busy, total)
        if last is not None and total > last[1]:
            values["cpu_pct"] = _num(min(100.0, max(0.0, 100.0 * (busy - last[0]) / (total - last[1]))))

    def _memory(self, values: dict[str, float], now_s: float) -> None:
        if procfs.AVAILABLE:
            try:
                values["mem_used_bytes"], values["mem_total_bytes"] = procfs.memory_used_total()
                return
            except ValueError:  # an old kernel without MemAvailable: psutil estimates it
                pass
        vm = psutil.virtual_memory()
        values["mem_used_bytes"] = float(vm.total - vm.available)
        values["mem_total_bytes"] = float(vm.total)

    def _tree(self, values: dict[str, float], now_s: float) -> None:
        # Walking the tree opens one /proc file per thread of every process in it (a torch
        # trainer has dozens): between walks the known pids are read directly, and a walk
        # comes every TREE_WALK_EVERY samples or as soon as one of them has exited.
        if self._walk_in <= 0 or not self._procs:
            pids = _descendants(self.root_pid)
            self._walk_in = TREE_WALK_EVERY
        else:
            pids = list(self._procs)
        self._walk_in -= 1
        rss = 0.0
        cpu_delta = 0.0
        seen: dict[int, tuple[Any, float]] = {}
        for pid in pids:
            cached = self._procs.get(pid)
            try:
                if procfs.AVAILABLE:
                    cpu_s, mem, ident = procfs.process_stat(pid)
                    if cached is not None and cached[0] != ident:
                        cached = None  # the pid now belongs to another process
                else:
                    proc = cached[0] if cached is not None else psutil.Process(pid)
                    with proc.oneshot():
                        mem = proc.memory_info().rss
                        times = proc.cpu_times()
                    cpu_s, ident = times.user + times.system, proc
            except (OSError, ValueError, IndexError, psutil.Error):  # exited between the listing and the reading
                self._walk_in = 0
                continue
            rss += mem
            if cached is not None:
                # A pid reused within one interval would read as a drop: never negative.
                cpu_delta += max(0.0, cpu_s - cached[1])
            seen[pid] = (ident, cpu_s)
        last_s, self._proc_last_s = self._proc_last_s, now_s
        self._procs = seen
        self.tree_pids = set(seen)
        if not seen:
            return
        values["proc_rss_bytes"] = rss
        values["proc_count"] = float(len(seen))
        if last_s is not None and now_s > last_s:
            # CPU times tick in 10 ms steps: over a short interval the ratio can overshoot.
            most = 100.0 * (os.cpu_count() or 1)
            values["proc_cpu_pct"] = _num(min(most, 100.0 * cpu_delta / (now_s - last_s)))

    def _io(self, values: dict[str, float], now_s: float) -> None:
        pairs: list[tuple[str, float]] = []
        if self._disks is not None:
            read, written = self._disks.read()
            pairs += [("disk_read_bytes_per_s", read), ("disk_write_bytes_per_s", written)]
            sent, recv = procfs.net_totals()
            pairs += [("net_sent_bytes_per_s", sent), ("net_recv_bytes_per_s", recv)]
        else:
            disk = psutil.disk_io_counters()
            if disk is not None:
                pairs += [("disk_read_bytes_per_s", disk.read_bytes), ("disk_write_bytes_per_s", disk.write_bytes)]
            net = psutil.net_io_counters()
            if net is not None:
                pairs += [("net_sent_bytes_per_s", net.bytes_sent), ("net_recv_bytes_per_s", net.bytes_recv)]
        for name, counter in pairs:
            rate = self._rates.rate(name, float(counter), now_s)
            if rate is not None:
                values[name] = _num(rate)


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it; empty when ``root`` is gone.

    On Linux this follows ``/proc/PID/task/TID/children``, which reads only
    the tree (psutil's ``children(recursive=True)`` reads every process's
    ``stat``: ~4 ms with 100 processes, far more on a busy node); elsewhere,
    or where the kernel lacks that file, it falls back to psutil.
    """
    if os.path.exists(f"/proc/{root}/task/{root}/children"):
        out: list[int] = []
        todo = [root]
        while todo and len(out) < 100_000:  # bounded even if /proc were inconsistent
            pid = todo.pop()
            out.append(pid)
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:  # exited meanwhile
                continue
            for tid in tasks:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        todo.extend(int(c) for c in f.read().split())
                except (OSError, ValueError):
                    continue
        return out
    try:
        proc = psutil.Process(root)
        return [root, *(p.pid for p in proc.children(recursive=True))]
    except psutil.Error:
        return []


def host_facts() -> dict[str, Any]:
    """Static facts of the host for the run's ``start`` record."""
    return {
        "cpu_count": os.cpu_count() or 0,
        "mem_total_bytes": int(psutil.virtual_memory().total),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


class Sampler:
    """Takes samples; not thread-safe (one :class:`SamplerThread` drives it)."""

    def __init__(
        self,
        *,
        root_pid: int | None = None,
        gpu: GpuBackend | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic_s: Callable[[], float] = time.monotonic,
        node_wide: bool = True,
    ) -> None:
        self.host = HostProbe(os.getpid() if root_pid is None else root_pid)
        self.gpu = gpu
        #: Read the GPUs and the host-wide values (see the module docstring).
        self.node_wide = node_wide
        self._clock_ns = clock_ns
        self._monotonic_s = monotonic_s
        self._gpu_count = 0
        self._uuids: list[str] = []
        #: (device index, group) pairs switched off because the device does not support them.
        self.off: set[tuple[int, str]] = set()
        self.gpu_errors = 0
        self._torch_devices: dict[int, str] | None = None

    def open(self) -> dict[str, Any]:
        """Start the GPU backend; return the static facts (``host``, and ``gpus`` etc. with a GPU).

        Blocks on driver initialisation.  Never raises: without a GPU it logs
        one warning and samples the host only.
        """
        facts: dict[str, Any] = {}
        try:
            facts["host"] = host_facts()
        except Exception:  # noqa: BLE001, S110 - facts are optional
            pass
        if self.gpu is None:
            return facts
        try:
            gpu = self.gpu.open()
        except GpuUnavailable as exc:
            self.gpu = None
            log.warning("No GPU metrics; sampling the host only. reason=%s", exc)
            return facts
        except Exception as exc:  # noqa: BLE001 - a broken driver must not stop the run
            self.gpu = None
            log.warning("No GPU metrics: NVML failed to start; sampling the host only. reason=%s", exc)
            return facts
        self._gpu_count = len(gpu.devices)
        self._uuids = [str(d.get("uuid", "")) for d in gpu.devices]
        facts.update(gpu.to_map())
        return facts

    def sample(self) -> list[Record]:
        """One record per device, ``host`` first. Blocks on /proc and driver reads; never raises."""
        ts_ns = self._clock_ns()
        host = self.host.read(self._monotonic_s(), self.node_wide)
        records: list[Record] = []
        if host:
            records.append({"ts_ns": ts_ns, "device": "host", "values": host})
        by_device: dict[str, dict[str, float]] = {}
        if self.gpu is not None and self.node_wide:
            for i in range(self._gpu_count):
                values = self._gpu_values(i)
                if values:
                    by_device[f"gpu{i}"] = values
        for device, values in self._torch_values().items():
            by_device.setdefault(device, {}).update(values)
        records.extend({"ts_ns": ts_ns, "device": d, "values": v} for d, v in by_device.items())
        return records

    def close(self) -> None:
        """Release the GPU backend (never raises)."""
        if self.gpu is not None:
            try:
                self.gpu.close()
            except Exception:  # noqa: BLE001, S110
                pass
            self.gpu = None

    def _gpu_values(self, index: int) -> dict[str, float]:
        assert self.gpu is not None
        values: dict[str, float] = {}
        for group in (*GROUPS, "processes"):
            if (index, group) in self.off:
                continue
            try:
                if group == "processes":
                    used = self.gpu.process_memory(index)
                    tree = self.host.tree_pids
                    values["proc_mem_used_bytes"] = float(sum(b for pid, b in used.items() if pid in tree))
                else:
                    values.update({k: _num(v) for k, v in self.gpu.read(index, group).items()})
            except FieldUnsupported:
                self.off.add((index, group))
            except GpuError as exc:
                self.gpu_errors += 1
                if self.gpu_errors == 1:
                    log.warning("A GPU reading failed; retrying at the next sample. device=gpu%d error=%s", index, exc)
        return values

    def _torch_values(self) -> dict[str, dict[str, float]]:
        torch = sys.modules.get("torch")  # only when the trainer imported it: never import torch here
        cuda = getattr(torch, "cuda", None)
        if cuda is None:
            return {}
        try:
            if not cuda.is_initialized():
                return {}
            if self._torch_devices is None:
                self._torch_devices = self._map_torch_devices(cuda)
            return {
                name: {
                    "torch_allocated_bytes": float(cuda.memory_allocated(i)),
                    "torch_reserved_bytes": float(cuda.memory_reserved(i)),
                    "torch_max_allocated_bytes": float(cuda.max_memory_allocated(i)),
                }
                for i, name in self._torch_devices.items()
            }
        except Exception:  # noqa: BLE001 - torch's allocator stats are optional
            return {}

    def _map_torch_devices(self, cuda: Any) -> dict[int, str]:
        """CUDA index -> device name: ``gpuN`` where the UUID matches NVML's, else ``cudaN``."""
        out: dict[int, str] = {}
        for i in range(int(cuda.device_count())):
            uuid = str(getattr(cuda.get_device_properties(i), "uuid", ""))
            match = [n for n, u in enumerate(self._uuids) if u and uuid and u.removeprefix("GPU-") == uuid]
            out[i] = f"gpu{match[0]}" if match else f"cuda{i}"
        return out


class SamplerThread:
    """Runs a :class:`Sampler` on a daemon thread: a sample at start, then every ``interval_s``.

    Why a thread of its own rather than the sender's: driver and
    /proc reads block (NVML's PCIe reading alone takes ~20 ms), which would
    stall sending; the reads release the GIL, so the training thread does not
    wait on them.
    """

    def __init__(self, sampler: Sampler, put: Callable[[Record], Any], interval_s: float) -> None:
        self.sampler = sampler
        self._put = put
        self.interval_s = max(0.01, float(interval_s))
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        #: Static facts from :meth:`Sampler.open` (set before the first sample).
        self.facts: dict[str, Any] = {}
        self.samples = 0
        self.errors = 0
        #: CPU seconds the sampler thread spent sampling (its whole cost, GIL-held or not).
        self.cpu_s = 0.0

    def start(self) -> None:
        """Start the thread; returns at once."""
        self._thread = threading.Thread(target=self._main, name="runstream-sampler", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout_s: float) -> dict[str, Any] | None:
        """The static facts once the sampler has opened, or None after ``timeout_s``."""
        return self.facts if self._ready.wait(max(0.0, timeout_s)) else None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sampling; blocks up to ``timeout_s`` for a sample in progress. Never raises."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def stats(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "errors": self.errors,
            "gpu_errors": self.sampler.gpu_errors,
            "cpu_s": self.cpu_s,
            "off": sorted(f"gpu{i}:{g}" for i, g in self.sampler.off),
        }

    def _main(self) -> None:
        try:
            self.facts = self.sampler.open()
        finally:
            self._ready.set()
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                cpu0 = time.thread_time()
                try:
                    for record in self.sampler.sample():
                        self._put(record)
                    self.samples += 1
                except Exception as exc:  # noqa: BLE001 - sampling must never end the run
                    self.errors += 1
                    if self.errors == 1:
                        log.warning("Resource sample failed. error=%s", type(exc).__name__)
                self.cpu_s += time.thread_time() - cpu0
                # Fixed cadence; after a long stall, skip missed ticks rather than burst.
                next_at += self.interval_s
                now = time.monotonic()
                if next_at < now:
                    next_at = now + self.interval_s
                self._stop.wait(next_at - now)
        finally:
            self.sampler.close()
