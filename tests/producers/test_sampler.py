"""The resource sampler: a fake NVML at the GpuBackend seam, real psutil, a real broker (producers.sampler)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sdk_support import read_envelopes, run_script, scaled, valid_records

import runstream
from producers.nvml import GROUPS, FieldUnsupported, GpuError, GpuFacts, GpuUnavailable
from producers.options import Options
from producers.sampler import Sampler, SamplerThread
from runstream import settings as settings_mod
from runstream.events import resources
from runstream.events.limits import DEFAULT_LIMITS
from runstream.topics import Topics

#: What the fake devices report, per group (names as the real adapter gives them).
READINGS: dict[str, dict[str, float]] = {
    "utilization": {"util_pct": 87.0, "mem_util_pct": 40.0},
    "memory": {"mem_used_bytes": 30e9, "mem_total_bytes": 80e9},
    "power": {"power_w": 312.5},
    "power_limit": {"power_limit_w": 700.0},
    "temperature": {"temp_c": 61.0},
    "clocks": {"sm_clock_mhz": 1980.0, "mem_clock_mhz": 2619.0},
    "ecc": {"ecc_corrected_count": 0.0, "ecc_uncorrected_count": 0.0},
    "pcie": {"pcie_tx_bytes_per_s": 1e6, "pcie_rx_bytes_per_s": 2e6},
}


class FakeGpu:
    """Two fake GPUs behind the GpuBackend seam; counts every call per (device, group)."""

    def __init__(
        self,
        *,
        open_error: Exception | None = None,
        unsupported: dict[int, set[str]] | None = None,
        transient: dict[tuple[int, str], int] | None = None,
        processes: dict[int, int] | None = None,
    ) -> None:
        self.open_error = open_error
        self.unsupported = unsupported or {}
        self.transient = dict(transient or {})  # (device, group) -> failures left
        self.processes = processes or {}
        self.calls: Counter[tuple[int, str]] = Counter()
        self.opened = 0
        self.closed = 0

    def open(self) -> GpuFacts:
        self.opened += 1
        if self.open_error is not None:
            raise self.open_error
        return GpuFacts(
            driver_version="550.54.15",
            cuda_driver_version=12040,
            devices=[
                {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaa"},
                {"index": 1, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-bbbb"},
            ],
        )

    def _check(self, index: int, group: str) -> None:
        self.calls[(index, group)] += 1
        if group in self.unsupported.get(index, set()):
            raise FieldUnsupported(f"{group} not supported on {index}")
        left = self.transient.get((index, group), 0)
        if left:
            self.transient[(index, group)] = left - 1
            raise GpuError("GPU is lost")

    def read(self, index: int, group: str) -> dict[str, float]:
        self._check(index, group)
        return dict(READINGS[group])

    def process_memory(self, index: int) -> dict[int, int]:
        self._check(index, "processes")
        return dict(self.processes)

    def close(self) -> None:
        self.closed += 1


def by_device(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {r["device"]: r["values"] for r in records}


@pytest.fixture
def child_tree() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A python child holding ~64 MiB that starts a `sleep` grandchild; yields (child, grandchild pid)."""
    code = (
        "import subprocess, sys, time\n"
        "held = b'x' * (64 << 20)\n"
        "g = subprocess.Popen(['sleep', '120'])\n"
        "print(g.pid, flush=True)\n"
        "sys.stdin.read()\n"
        "g.kill(); g.wait()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        grandchild = int(proc.stdout.readline())
        yield proc, grandchild
    finally:
        proc.stdin.close()
        proc.wait(scaled(10))
        proc.stdout.close()


# ------------------------------------------------------------------ GPUs


def test_each_gpu_gets_a_record_of_unit_named_values() -> None:
    """With two GPUs a sample holds host, gpu0 and gpu1 records that the resources validator accepts."""
    sampler = Sampler(gpu=FakeGpu(processes={os.getpid(): 1 << 30}))
    sampler.open()
    records = sampler.sample()
    assert [r["device"] for r in records] == ["host", "gpu0", "gpu1"]
    for r in records:
        assert resources.validate(r, DEFAULT_LIMITS) == r
    expected = {k: v for group in GROUPS for k, v in READINGS[group].items()}
    expected["proc_mem_used_bytes"] = float(1 << 30)
    assert by_device(records)["gpu1"] == expected


def test_static_facts_name_the_driver_and_every_gpu() -> None:
    """open() returns the driver versions, each GPU's name and UUID, and host facts."""
    facts = Sampler(gpu=FakeGpu()).open()
    assert (facts["driver_version"], facts["cuda_driver_version"]) == ("550.54.15", 12040)
    assert [(g["index"], g["uuid"]) for g in facts["gpus"]] == [(0, "GPU-aaaa"), (1, "GPU-bbbb")]
    assert facts["host"]["cpu_count"] == os.cpu_count()


def test_unsupported_reading_is_switched_off_once_for_that_device() -> None:
    """A group a device refuses as unsupported is asked for once there, never again; others go on."""
    gpu = FakeGpu(unsupported={1: {"power", "ecc", "processes"}})
    sampler = Sampler(gpu=gpu)
    sampler.open()
    for _ in range(5):
        devices = by_device(sampler.sample())
    assert gpu.calls[(1, "power")] == gpu.calls[(1, "ecc")] == gpu.calls[(1, "processes")] == 1
    assert gpu.calls[(0, "power")] == gpu.calls[(1, "temperature")] == 5
    assert "power_w" not in devices["gpu1"] and "ecc_corrected_count" not in devices["gpu1"]
    assert "proc_mem_used_bytes" not in devices["gpu1"]
    assert devices["gpu1"]["temp_c"] == 61.0 and devices["gpu0"]["power_w"] == 312.5
    assert sampler.off == {(1, "power"), (1, "ecc"), (1, "processes")}


def test_transient_gpu_error_leaves_the_value_out_and_retries() -> None:
    """A failed reading (not 'unsupported') is missing from that sample and read again at the next."""
    gpu = FakeGpu(transient={(0, "temperature"): 1})
    sampler = Sampler(gpu=gpu)
    sampler.open()
    first, second = by_device(sampler.sample()), by_device(sampler.sample())
    assert "temp_c" not in first["gpu0"] and first["gpu1"]["temp_c"] == 61.0
    assert second["gpu0"]["temp_c"] == 61.0
    assert sampler.off == set() and sampler.gpu_errors == 1


@pytest.mark.parametrize(
    "error",
    [GpuUnavailable("NVML could not start: NVMLError_DriverNotLoaded"), RuntimeError("driver exploded")],
)
def test_gpu_failure_at_init_notes_once_and_samples_the_host(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    """No NVML or a driver error at open: one warning, host samples only, the backend never read."""
    gpu = FakeGpu(open_error=error)
    sampler = Sampler(gpu=gpu)
    with caplog.at_level(logging.WARNING, logger="runstream"):
        facts = sampler.open()
        samples = [sampler.sample() for _ in range(3)]
    notes = [r for r in caplog.records if r.name.startswith("runstream")]
    assert len(notes) == 1 and "No GPU metrics" in notes[0].getMessage()
    assert "gpus" not in facts and "host" in facts
    assert all([r["device"] for r in s] == ["host"] for s in samples)
    assert gpu.calls == Counter()


def test_process_gpu_memory_counts_only_the_sampled_tree(
    child_tree: tuple[subprocess.Popen[str], int],
) -> None:
    """proc_mem_used_bytes sums the GPU memory of the tree's processes, not of other processes."""
    child, grandchild = child_tree
    others = os.getppid()  # outside the tree rooted at this process
    gpu = FakeGpu(processes={os.getpid(): 1000, grandchild: 20, others: 5000})
    sampler = Sampler(gpu=gpu)
    sampler.open()
    assert by_device(sampler.sample())["gpu0"]["proc_mem_used_bytes"] == 1020.0


def test_torch_allocator_stats_land_on_the_matching_gpu() -> None:
    """With CUDA initialised in torch, allocator stats go to the NVML device of the same UUID (else cudaN)."""
    cuda = types.SimpleNamespace(
        is_initialized=lambda: True,
        device_count=lambda: 2,
        get_device_properties=lambda i: types.SimpleNamespace(uuid=["bbbb", "cccc"][i]),
        memory_allocated=lambda i: 100 + i,
        memory_reserved=lambda i: 200 + i,
        max_memory_allocated=lambda i: 300 + i,
    )
    fake_torch = types.ModuleType("torch")
    fake_torch.cuda = cuda  # type: ignore[attr-defined]
    sampler = Sampler(gpu=FakeGpu())
    sampler.open()
    real = sys.modules.get("torch")
    sys.modules["torch"] = fake_torch
    try:
        devices = by_device(sampler.sample())
    finally:
        if real is None:
            del sys.modules["torch"]
        else:
            sys.modules["torch"] = real
    assert devices["gpu1"]["torch_allocated_bytes"] == 100.0
    assert devices["gpu1"]["util_pct"] == 87.0
    assert devices["cuda1"] == {
        "torch_allocated_bytes": 101.0,
        "torch_reserved_bytes": 201.0,
        "torch_max_allocated_bytes": 301.0,
    }
    assert "torch_allocated_bytes" not in devices["gpu0"]


def _fake_torch() -> types.ModuleType:
    cuda = types.SimpleNamespace(
        is_initialized=lambda: True,
        device_count=lambda: 1,
        get_device_properties=lambda i: types.SimpleNamespace(uuid="bbbb"),
        memory_allocated=lambda i: 100,
        memory_reserved=lambda i: 200,
        max_memory_allocated=lambda i: 300,
    )
    fake = types.ModuleType("torch")
    fake.cuda = cuda  # type: ignore[attr-defined]
    return fake


def test_rank_without_node_wide_sampling_reports_only_its_own_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    """node_wide=False: no GPU or host-wide readings, but this process tree's RSS and its torch memory."""
    gpu = FakeGpu()
    sampler = Sampler(gpu=gpu, node_wide=False)
    sampler.open()
    monkeypatch.setitem(sys.modules, "torch", _fake_torch())
    sampler.sample()
    devices = by_device(sampler.sample())
    assert set(devices) == {"host", "gpu1"}
    assert {"proc_rss_bytes", "proc_count"} <= set(devices["host"]) <= {"proc_rss_bytes", "proc_count", "proc_cpu_pct"}
    assert devices["host"]["proc_rss_bytes"] > 0
    assert devices["gpu1"] == {
        "torch_allocated_bytes": 100.0,
        "torch_reserved_bytes": 200.0,
        "torch_max_allocated_bytes": 300.0,
    }


def test_node_wide_sampler_reads_gpus_and_the_host() -> None:
    """node_wide=True (local rank 0's default): GPU groups and host CPU/memory are read."""
    sampler = Sampler(gpu=FakeGpu(), node_wide=True)
    sampler.open()
    sampler.sample()
    devices = by_device(sampler.sample())
    assert {"gpu0", "gpu1"} <= set(devices)
    assert {"mem_used_bytes", "mem_total_bytes", "proc_rss_bytes"} <= set(devices["host"])
    assert devices["gpu0"]["util_pct"] == READINGS["utilization"]["util_pct"]


@pytest.mark.parametrize(
    ("local_rank", "option", "node_wide"),
    [("0", None, True), ("1", None, False), ("3", True, True), ("0", False, False)],
)
def test_only_local_rank_zero_samples_the_node_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_rank: str, option: bool | None, node_wide: bool
) -> None:
    """LOCAL_RANK picks the node-wide sampler (rank 0) unless Options.sample_node_wide says otherwise."""
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    settings = settings_mod.load({"kafka": "127.0.0.1:9", "data_dir": str(tmp_path)}, environ={})
    run = runstream.init(
        project="ranks",
        settings=settings,
        capture=False,
        options=Options(sample_node_wide=option, spool=False, finish_timeout_s=0.05),
    )
    try:
        assert run._sampler is not None  # noqa: SLF001
        assert run._sampler.sampler.node_wide is node_wide  # noqa: SLF001
    finally:
        run.finish()


def test_sampler_never_imports_torch() -> None:
    """Sampling in a process that has not imported torch leaves torch unimported."""
    code = (
        "import sys\n"
        "from producers.sampler import Sampler\n"
        "s = Sampler(); s.open(); s.sample(); s.sample()\n"
        "print('torch' in sys.modules)\n"
    )
    proc = run_script(code, {}, scaled(60))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# ------------------------------------------------------------------ host


def test_host_rss_includes_the_child_process_tree(child_tree: tuple[subprocess.Popen[str], int]) -> None:
    """Rooted at this process, the tree holds the child and grandchild and their RSS is counted."""
    import psutil

    child, grandchild = child_tree
    sampler = Sampler(root_pid=os.getpid())
    own = psutil.Process().memory_info().rss
    host = by_device(sampler.sample())["host"]
    assert {os.getpid(), child.pid, grandchild} <= sampler.host.tree_pids
    assert host["proc_count"] >= 3
    assert host["proc_rss_bytes"] >= own + 0.9 * (64 << 20)


def test_tree_rooted_at_another_process_excludes_this_one(
    child_tree: tuple[subprocess.Popen[str], int],
) -> None:
    """sample_root_pid picks the tree: rooted at the child, it holds the child and grandchild only."""
    child, grandchild = child_tree
    sampler = Sampler(root_pid=child.pid)
    host = by_device(sampler.sample())["host"]
    assert sampler.host.tree_pids == {child.pid, grandchild}
    assert host["proc_count"] == 2.0


def test_rates_and_cpu_shares_appear_from_the_second_sample() -> None:
    """The first host sample lacks rates and CPU %; the second has them, within their ranges."""
    sampler = Sampler()
    first = by_device(sampler.sample())["host"]
    time.sleep(0.05)
    second = by_device(sampler.sample())["host"]
    rated = {"cpu_pct", "proc_cpu_pct", "disk_read_bytes_per_s", "net_sent_bytes_per_s"}
    assert not rated & set(first)
    assert {"cpu_pct", "proc_cpu_pct"} <= set(second)
    assert 0.0 <= second["cpu_pct"] <= 100.0 and second["proc_cpu_pct"] >= 0.0
    assert all(v >= 0.0 for k, v in second.items() if k.endswith("_per_s"))
    assert 0 < second["mem_used_bytes"] <= second["mem_total_bytes"]


# ------------------------------------------------------------------ thread


def test_thread_stops_and_releases_the_gpu_backend() -> None:
    """SamplerThread samples repeatedly until stop(), then puts nothing more and closes the backend."""
    gpu = FakeGpu()
    got: list[dict[str, Any]] = []
    enough = threading.Event()

    def put(record: dict[str, Any]) -> None:
        got.append(record)
        if len(got) >= 9:
            enough.set()

    thread = SamplerThread(Sampler(gpu=gpu), put, interval_s=0.01)
    thread.start()
    assert thread.wait_ready(scaled(10)) is not None
    assert enough.wait(scaled(10))
    thread.stop(scaled(10))
    n = len(got)
    time.sleep(0.05)
    assert len(got) == n and gpu.closed == 1
    assert thread.stats()["samples"] >= 3


# ------------------------------------------------------------------ end to end


def test_run_sends_resource_samples_to_the_broker(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """A run with sample_interval_s=0.1 puts valid resources records, host in every sample, on the raw topic."""
    settings = settings_mod.load(
        {"kafka": sdk_broker, "topic_prefix": sdk_topics.prefix, "data_dir": str(tmp_path)}, environ={}
    )
    run = runstream.init(project="sample", settings=settings, capture=False, options=Options(sample_interval_s=0.1))
    try:
        deadline = time.monotonic() + scaled(20)
        while run.stats()["sampler"]["samples"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assert run.finish() is True

    def enough(found: dict[str, Any]) -> bool:
        return sum(len(e.records) for e in found["resources"]) >= 4 and bool(found["runs"])

    found = asyncio.run(read_envelopes(sdk_broker, sdk_topics, ("resources", "runs"), enough, scaled(20)))
    records = valid_records(found["resources"])
    assert len(records) >= 4
    stamps = {r["ts_ns"] for r in records}
    assert stamps == {r["ts_ns"] for r in records if r["device"] == "host"}
    assert all(r["values"]["mem_total_bytes"] > 0 for r in records if r["device"] == "host")
    start = valid_records(found["runs"])[0]
    assert start["event"] == "start"
    assert start["config"]["_system"]["host"]["cpu_count"] == os.cpu_count()


def test_sampling_off_sends_no_resources(tmp_path: Path) -> None:
    """Options(sample=False) starts no sampler thread and buffers no resources records."""
    settings = settings_mod.load({"kafka": "127.0.0.1:9", "data_dir": str(tmp_path)}, environ={})
    run = runstream.init(
        project="nosample",
        settings=settings,
        capture=False,
        options=Options(sample=False, spool=False, finish_timeout_s=0.05),
    )
    try:
        assert run._sampler is None  # noqa: SLF001
        assert run.stats()["enqueued"]["resources"] == 0 and "sampler" not in run.stats()
    finally:
        run.finish()
