"""What runstream costs a training step: the same fake steps with and without a run.

A "step" busy-computes ~``--step-ms`` of numpy work, then does what a trainer
does around it: ``run.log`` of 10 scalars, one ``print`` and one ``logging``
call.  Without runstream the print and the logging call still happen (they
are the trainer's own); with runstream they are captured, and resources are
sampled at the default 1 s interval, against a Tansu broker started here.

The two modes alternate in blocks (A B A B ...; a fresh run per B block, its
``init``/``finish`` outside the timed steps), so that drift of a shared
machine hits both alike.  Figures: per-step time mean/p50/p99 per mode, the
slowdown of the mean in %, and two direct measures that noise does not
swamp: the time spent inside the runstream calls of a step, and the CPU time
of runstream's background threads (sender, sampler) per step.

The steps run in a child process whose stdout/stderr go to /dev/null (the
per-step prints would drown the table).

    python bench/overhead.py [--blocks 6] [--steps 40] [--step-ms 100] [--json bench/results/overhead.json]

Target: slowdown < 0.1 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_PCT = 0.1


def _calibrate(step_ms: float) -> tuple[Any, int]:
    """A numpy workload and the repeat count that makes it take about ``step_ms``."""
    import numpy as np

    a = np.random.default_rng(0).random(200_000)

    def work(reps: int) -> float:
        acc = 0.0
        for _ in range(reps):
            acc += float(np.sort(a)[100])
        return acc

    reps = 1
    while True:
        t0 = time.perf_counter()
        work(reps)
        took = time.perf_counter() - t0
        if took >= 0.02:
            break
        reps *= 2
    return work, max(1, round(reps * (step_ms / 1000.0) / took))


def _steps(work: Any, reps: int, n: int, run: Any, first_step: int, log: logging.Logger) -> dict[str, Any]:
    """``n`` timed steps; with ``run`` the runstream calls are timed on their own too."""
    now = time.perf_counter_ns
    step_ns: list[int] = []
    calls_ns: list[int] = []
    values = {f"m{j}": 0.0 for j in range(10)}
    cpu_all0, cpu_main0 = time.process_time(), time.thread_time()
    for i in range(first_step, first_step + n):
        t0 = now()
        work(reps)
        values["m0"] = i * 1e-3
        t1 = now()
        if run is not None:
            run.log(values, step=i)
        t2 = now()
        print(f"step {i} loss {values['m0']:.4f}")
        log.info("step %d done", i)
        t3 = now()
        step_ns.append(t3 - t0)
        calls_ns.append(t2 - t1 + t3 - t2)
    background_s = (time.process_time() - cpu_all0) - (time.thread_time() - cpu_main0)
    return {"step_ns": step_ns, "calls_ns": calls_ns, "background_cpu_s": background_s}


def child(args: argparse.Namespace) -> int:
    """Run the alternating blocks; write raw timings to ``args.out`` as JSON."""
    import runstream
    from producers.options import Options
    from runstream import settings as settings_mod

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    log = logging.getLogger("bench.step")
    work, reps = _calibrate(args.step_ms)
    _steps(work, reps, 3, None, 0, log)  # warm up
    modes: dict[str, dict[str, Any]] = {
        m: {"step_ns": [], "calls_ns": [], "background_cpu_s": 0.0} for m in ("without", "with")
    }
    sampler_cpu_s = 0.0
    samples = 0
    with tempfile.TemporaryDirectory() as data_dir:
        settings = settings_mod.load(
            {"kafka": args.kafka, "topic_prefix": args.prefix, "data_dir": data_dir}, environ={}
        )
        step = 0
        for _ in range(args.blocks):
            for mode in ("without", "with"):
                run = None
                if mode == "with":
                    run = runstream.init(project="bench", name="overhead", settings=settings, options=Options())
                got = _steps(work, reps, args.steps, run, step, log)
                step += args.steps
                if run is not None:
                    stats = run.stats()["sampler"]
                    sampler_cpu_s += stats["cpu_s"]
                    samples += stats["samples"]
                    run.finish()
                for key in ("step_ns", "calls_ns"):
                    modes[mode][key] += got[key]
                modes[mode]["background_cpu_s"] += got["background_cpu_s"]
    Path(args.out).write_text(
        json.dumps({"modes": modes, "reps": reps, "sampler_cpu_s": sampler_cpu_s, "samples": samples})
    )
    return 0


def _summary(step_ns: list[int]) -> dict[str, float]:
    ms = sorted(x / 1e6 for x in step_ns)
    return {
        "steps": len(ms),
        "mean_ms": statistics.fmean(ms),
        "p50_ms": ms[len(ms) // 2],
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "stdev_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0,
    }



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=6, help="A/B block pairs")
    parser.add_argument("--steps", type=int, default=40, help="steps per block")
    parser.add_argument("--step-ms", type=float, default=100.0)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kafka", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    from runstream import kafka
    from runstream.embedded import broker_command, free_port
    from runstream.topics import Topics

    port = free_port()
    broker = subprocess.Popen(
        broker_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    bootstrap = f"127.0.0.1:{port}"
    prefix = f"overhead{os.getpid()}."
    try:
        asyncio.run(kafka.wait_for_broker(bootstrap, 30))
        asyncio.run(kafka.ensure_topics(bootstrap, Topics(prefix).all(), 1))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "raw.json"
            cmd = [sys.executable, __file__, "--child", "--kafka", bootstrap, "--prefix", prefix, "--out", str(out),
                   "--blocks", str(args.blocks), "--steps", str(args.steps), "--step-ms", str(args.step_ms)]
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            if proc.returncode != 0:
                print(f"child failed with code {proc.returncode}", file=sys.stderr)
                return 1
            raw = json.loads(out.read_text())
    finally:
        broker.terminate()
        broker.wait(10)

    rows = {m: _summary(raw["modes"][m]["step_ns"]) for m in ("without", "with")}
    with_ = raw["modes"]["with"]
    steps_with = len(with_["step_ns"])
    calls_us = statistics.fmean(with_["calls_ns"]) / 1e3
    calls_base_us = statistics.fmean(raw["modes"]["without"]["calls_ns"]) / 1e3
    slowdown = 100.0 * (rows["with"]["mean_ms"] - rows["without"]["mean_ms"]) / rows["without"]["mean_ms"]
    direct_us = calls_us - calls_base_us
    direct_pct = 100.0 * direct_us / 1e3 / rows["without"]["mean_ms"]
    background_ms = 1e3 * with_["background_cpu_s"] / steps_with
    sample_ms = 1e3 * raw["sampler_cpu_s"] / max(1, raw["samples"])

    header = f"{'mode':<10}{'steps':>7}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}{'stdev ms':>10}"
    print(header)
    print("-" * len(header))
    for mode, r in rows.items():
        print(f"{mode:<10}{r['steps']:>7}{r['mean_ms']:>10.3f}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}"
              f"{r['stdev_ms']:>10.3f}")
    print(f"\nslowdown of the mean step: {slowdown:+.3f} % (noise: stdev/sqrt(n) ~ "
          f"{100 * rows['without']['stdev_ms'] / rows['without']['mean_ms'] / rows['without']['steps'] ** 0.5:.3f} %)")
    print(f"in-step cost (run.log + captured print + captured logging - the same without runstream): "
          f"{direct_us:.1f} us/step = {direct_pct:.4f} % of a step")
    print(f"background threads (sender + sampler) CPU: {background_ms:.3f} ms/step; "
          f"sampler {sample_ms:.2f} ms CPU per sample ({raw['samples']} samples)")
    met = direct_pct < TARGET_PCT
    print(f"target in-step cost < {TARGET_PCT} %: {'met' if met else 'MISSED'}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "bench": "overhead",
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "blocks": args.blocks,
                "steps_per_block": args.steps,
                "step_ms_target": args.step_ms,
                "results": rows,
                "slowdown_pct": slowdown,
                "in_step_cost_us": direct_us,
                "in_step_cost_pct": direct_pct,
                "background_cpu_ms_per_step": background_ms,
                "sampler_cpu_ms_per_sample": sample_ms,
                "samples": raw["samples"],
                "target_pct": TARGET_PCT,
                "met": met,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
