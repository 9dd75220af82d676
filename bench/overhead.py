"""What runstream costs a training step: the same deterministic steps with and without a run.

A "step" is a fixed, CPU-bound workload calibrated once to ~``--step-ms``
(``--work matmul``: a loop of 256x256 float64 matrix products with
single-threaded BLAS; ``--work sort``: numpy sorts of 200k floats), then
what a trainer does around it: ``run.log`` of 10 scalars, one ``print`` and
one ``logging`` call.  Without runstream (A) the print and the logging call
still happen (they are the trainer's own); with runstream (B) they are
captured, metrics are sent to a Tansu broker started here, and resources
are sampled at the default 1 s interval: logging, capture and sampling all on.

Design, so that a 0.1 % effect is not drowned by a shared machine's drift:

* A and B blocks are paired and interleaved many times in one process, the
  order inside each pair drawn at random (seeded), so drift and order effects
  hit both alike.  B blocks each get a fresh run; its ``init``, its first
  (connecting, first-sample) step and its ``finish`` are outside the timed
  steps: the figure is the steady state of a long run.
* The estimate is the median over pairs of (median B step - median A step),
  as % of the median A step, with a 95 % bootstrap confidence interval
  (pairs resampled).  It is given for wall-clock time, for the training
  thread's own CPU time (``time.thread_time``), which is blind to being
  descheduled, and for their difference (time the training thread spent
  off the CPU: waiting for the GIL or for a core).  Both are given as %
  of the median wall-clock A step.
* Two direct measures that noise does not swamp: the time the training
  thread spends inside the runstream calls of a step (B) beside the same
  print/logging calls without runstream (A), and the CPU time of
  runstream's background threads (sender, sampler; each thread's own CPU
  clock; librdkafka's native threads as the rest of the process's CPU) per
  step.  On an idle core that CPU is free; on a machine whose every core is
  busy (this one has 2, shared) it competes with the step, so the
  background cost is reported as a % of a step too.

The steps run in a child process whose stdout/stderr go to /dev/null (the
per-step prints would drown the table), with one BLAS thread.

    python bench/overhead.py [--pairs 24] [--steps 16] [--step-ms 100] [--reps N] [--work matmul]
                             [--flush-interval-s 0.05] [--cycle-gap-s 0.2] [--sample-interval-s 1.0]
                             [--json bench/results/overhead.json]

Target: slowdown < 0.1 %.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_PCT = 0.1
#: One BLAS thread: the step is one core's work, as deterministic as a shared machine allows.
BLAS_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BOOTSTRAP_RESAMPLES = 5000


def _workload(kind: str) -> Callable[[int], float]:
    """A deterministic CPU-bound function of a repeat count (same inputs every call)."""
    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "matmul":
        a = rng.random((256, 256))
        b = rng.random((256, 256)) / 256.0

        def matmul(reps: int) -> float:
            c = a
            for _ in range(reps):
                c = c @ b
            return float(c[0, 0])

        return matmul
    data = rng.random(200_000)

    def sort(reps: int) -> float:
        acc = 0.0
        for _ in range(reps):
            acc += float(np.sort(data)[100])
        return acc

    return sort


def _calibrate(work: Callable[[int], float], step_ms: float) -> int:
    """The repeat count that makes ``work`` take about ``step_ms`` on an uncontended core.

    Scaled twice from the fastest of a few timings (contention only ever slows a timing down).
    """

    def fastest(reps: int, tries: int) -> float:
        took = []
        for _ in range(tries):
            t0 = time.perf_counter()
            work(reps)
            took.append(time.perf_counter() - t0)
        return min(took)

    reps = 1
    while fastest(reps, 1) < 0.02:
        reps *= 2
    for _ in range(2):
        reps = max(1, round(reps * (step_ms / 1000.0) / fastest(reps, 3)))
    return reps


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds of each live Python thread of this process, by thread name (per-thread clocks)."""
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            out[thread.name] = out.get(thread.name, 0.0) + time.clock_gettime(clock)
        except OSError:  # the thread ended meanwhile
            continue
    return out


def _steps(
    work: Callable[[int], float], reps: int, n: int, run: Any, first_step: int, log: logging.Logger
) -> dict[str, Any]:
    """``n`` timed steps: wall and thread-CPU time of each, and of its print/log calls."""
    now, cpu = time.perf_counter_ns, time.thread_time_ns
    wall_ns: list[int] = []
    cpu_ns: list[int] = []
    calls_ns: list[int] = []
    values = {f"m{j}": 0.0 for j in range(10)}
    for i in range(first_step, first_step + n):
        c0, t0 = cpu(), now()
        work(reps)
        values["m0"] = i * 1e-3
        t1 = now()
        if run is not None:
            run.log(values, step=i)
        print(f"step {i} loss {values['m0']:.4f}")
        log.info("step %d done", i)
        t2 = now()
        wall_ns.append(t2 - t0)
        cpu_ns.append(cpu() - c0)
        calls_ns.append(t2 - t1)
    off_cpu_ns = [w - c for w, c in zip(wall_ns, cpu_ns, strict=True)]
    return {"wall_ns": wall_ns, "cpu_ns": cpu_ns, "off_cpu_ns": off_cpu_ns, "calls_ns": calls_ns}


def _block(
    mode: str, args: argparse.Namespace, settings: Any, work: Callable[[int], float], reps: int, step: int
) -> dict[str, Any]:
    """One block of ``args.steps`` timed steps; in mode ``with`` inside a fresh run."""
    import runstream
    from producers.options import Options

    log = logging.getLogger("bench.step")
    run = None
    if mode == "with":
        options = Options(
            flush_interval_s=args.flush_interval_s,
            cycle_gap_s=args.cycle_gap_s,
            sample_interval_s=args.sample_interval_s,
        )
        run = runstream.init(project="bench", name="overhead", settings=settings, options=options)
    _steps(work, reps, 1, run, step, log)  # untimed: the run's start (connect, first sample)
    gc.collect()
    cycles0 = run.stats()["state"]["cycles"] if run is not None else 0
    threads0 = _thread_cpu_s()
    proc0, main0 = time.process_time(), time.thread_time()
    got = _steps(work, reps, args.steps, run, step + 1, log)
    proc1, main1 = time.process_time(), time.thread_time()
    threads1 = _thread_cpu_s()
    got["background_cpu_s"] = (proc1 - proc0) - (main1 - main0)
    got["thread_cpu_s"] = {
        name: threads1[name] - threads0.get(name, 0.0) for name in threads1 if name != threading.main_thread().name
    }
    if run is not None:
        stats = run.stats()
        got["cycles"] = stats["state"]["cycles"] - cycles0
        got["samples"] = stats["sampler"]["samples"]
        got["finished_ok"] = run.finish()
        got["dropped"] = sum(stats["dropped"].values())
    return got


def child(args: argparse.Namespace) -> int:
    """Run the interleaved pairs of blocks; write raw timings to ``args.out`` as JSON."""
    from runstream import settings as settings_mod

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    work = _workload(args.work)
    # A fixed --reps makes runs on a loaded machine (or of two versions) do the same work per step.
    reps = args.reps if args.reps else _calibrate(work, args.step_ms)
    order = random.Random(args.seed)
    pairs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as data_dir:
        settings = settings_mod.load(
            {"kafka": args.kafka, "topic_prefix": args.prefix, "data_dir": data_dir}, environ={}
        )
        _block("without", args, settings, work, reps, 0)  # warm up both paths once
        _block("with", args, settings, work, reps, 0)
        step = 0
        for _ in range(args.pairs):
            modes = ["without", "with"]
            order.shuffle(modes)
            pair: dict[str, Any] = {"first": modes[0]}
            for mode in modes:
                pair[mode] = _block(mode, args, settings, work, reps, step)
                step += args.steps + 1
            pairs.append(pair)
    Path(args.out).write_text(json.dumps({"reps": reps, "pairs": pairs}))
    return 0


# ---------------------------------------------------------------- analysis


def _pair_diffs(pairs: list[dict[str, Any]], key: str) -> list[float]:
    """Per pair: median B step - median A step (ns) of ``key``."""
    return [statistics.median(p["with"][key]) - statistics.median(p["without"][key]) for p in pairs]


def _bootstrap_ci(diffs: list[float], seed: int) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the median of ``diffs`` (pairs resampled)."""
    rng = random.Random(seed)
    n = len(diffs)
    meds = sorted(statistics.median(rng.choices(diffs, k=n)) for _ in range(BOOTSTRAP_RESAMPLES))
    return meds[int(0.025 * len(meds))], meds[int(0.975 * len(meds)) - 1]


def _effect(pairs: list[dict[str, Any]], key: str, seed: int) -> dict[str, float]:
    """The median per-pair difference of ``key``, with its CI, as % of the median wall-clock A step."""
    diffs = _pair_diffs(pairs, key)
    base = statistics.median(x for p in pairs for x in p["without"]["wall_ns"])
    lo, hi = _bootstrap_ci(diffs, seed)
    med = statistics.median(diffs)
    return {
        "base_ms": base / 1e6,
        "diff_us": med / 1e3,
        "diff_pct": 100.0 * med / base,
        "ci95_pct": [100.0 * lo / base, 100.0 * hi / base],
        "pairs": len(diffs),
    }


def _summary(ns: list[int]) -> dict[str, float]:
    ms = sorted(x / 1e6 for x in ns)
    return {
        "steps": len(ms),
        "mean_ms": statistics.fmean(ms),
        "p50_ms": ms[len(ms) // 2],
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "stdev_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0,
    }


def analyse(raw: dict[str, Any], seed: int) -> dict[str, Any]:
    """The report's figures from the child's raw timings."""
    pairs = raw["pairs"]

    def every(mode: str, key: str) -> list[Any]:
        return [x for p in pairs for x in p[mode][key]]

    steps_with = len(every("with", "wall_ns"))
    base_ms = statistics.median(every("without", "wall_ns")) / 1e6
    calls_with_us = statistics.median(every("with", "calls_ns")) / 1e3
    calls_without_us = statistics.median(every("without", "calls_ns")) / 1e3
    in_step_us = calls_with_us - calls_without_us
    background_s = sum(p["with"]["background_cpu_s"] for p in pairs)
    by_thread: dict[str, float] = {}
    for p in pairs:
        for name, s in p["with"]["thread_cpu_s"].items():
            by_thread[name] = by_thread.get(name, 0.0) + s
    # Threads Python does not know (librdkafka's: network I/O, batching, compression; they never hold the GIL).
    by_thread["native (librdkafka)"] = max(0.0, background_s - sum(by_thread.values()))
    background_ms = 1e3 * background_s / steps_with
    cycles = sum(p["with"].get("cycles", 0) for p in pairs)
    return {
        "steps": {m: _summary(every(m, "wall_ns")) for m in ("without", "with")},
        "wall": _effect(pairs, "wall_ns", seed),
        "thread_cpu": _effect(pairs, "cpu_ns", seed + 1),
        "off_cpu": _effect(pairs, "off_cpu_ns", seed + 2),
        "in_step_calls_us": {"with": calls_with_us, "without": calls_without_us, "sdk": in_step_us},
        "in_step_pct": 100.0 * in_step_us / 1e3 / base_ms,
        "background_cpu_ms_per_step": background_ms,
        "background_pct_of_step": 100.0 * background_ms / base_ms,
        # Per second of the timed steps' wall time: comparable across runs whose steps differ in length.
        "background_pct_of_core": 100.0 * background_s / (1e-9 * sum(every("with", "wall_ns"))),
        "background_cpu_ms_per_step_by_thread": {k: 1e3 * v / steps_with for k, v in sorted(by_thread.items())},
        # The sender's cost per sending cycle (a wake-up that took records and sent them).
        "sender_cycles_per_step": cycles / steps_with,
        "sender_cpu_us_per_cycle": 1e6 * by_thread.get("runstream-sender", 0.0) / cycles if cycles else 0.0,
        "native_cpu_us_per_cycle": 1e6 * by_thread["native (librdkafka)"] / cycles if cycles else 0.0,
        "without_background_cpu_ms_per_step": 1e3
        * sum(p["without"]["background_cpu_s"] for p in pairs)
        / len(every("without", "wall_ns")),
        "samples": sum(p["with"].get("samples", 0) for p in pairs),
        "dropped": sum(p["with"].get("dropped", 0) for p in pairs),
        "all_finished_ok": all(p["with"].get("finished_ok", False) for p in pairs),
    }


def _print(res: dict[str, Any], args: argparse.Namespace) -> None:
    header = f"{'mode':<10}{'steps':>7}{'mean ms':>10}{'p50 ms':>10}{'p99 ms':>10}{'stdev ms':>10}"
    print(header)
    print("-" * len(header))
    for mode, r in res["steps"].items():
        print(
            f"{mode:<10}{r['steps']:>7}{r['mean_ms']:>10.3f}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}"
            f"{r['stdev_ms']:>10.3f}"
        )
    print(f"\n{args.pairs} A/B pairs of {args.steps} steps, order random per pair; median of per-pair differences:")
    effects = (
        ("wall", "wall-clock step"),
        ("thread_cpu", "training thread CPU"),
        ("off_cpu", "wall - thread CPU"),
    )
    for key, label in effects:
        e = res[key]
        lo, hi = e["ci95_pct"]
        print(
            f"  {label:<22} {e['diff_pct']:+.3f} % ({e['diff_us']:+.0f} us of a {e['base_ms']:.1f} ms step), "
            f"95 % CI [{lo:+.3f}, {hi:+.3f}] %"
        )
    calls = res["in_step_calls_us"]
    print(
        f"in-step runstream cost: run.log + captured print + captured logging {calls['with']:.1f} us, "
        f"print + logging without runstream {calls['without']:.1f} us: "
        f"{calls['sdk']:+.1f} us/step = {res['in_step_pct']:.4f} % of a step"
    )
    threads = ", ".join(f"{k} {v:.3f}" for k, v in res["background_cpu_ms_per_step_by_thread"].items())
    print(
        f"background threads CPU: {res['background_cpu_ms_per_step']:.3f} ms/step "
        f"= {res['background_pct_of_step']:.3f} % of a step, {res['background_pct_of_core']:.3f} % of a core "
        f"({threads}); "
        f"without runstream {res['without_background_cpu_ms_per_step']:.3f} ms/step"
    )
    print(
        f"sender: {res['sender_cycles_per_step']:.2f} cycles/step, "
        f"{res['sender_cpu_us_per_cycle']:.0f} us CPU per cycle in the sender thread (holding the GIL), "
        f"{res['native_cpu_us_per_cycle']:.0f} us in librdkafka's threads"
    )
    print(
        f"{res['samples']} resource samples, {res['dropped']} records dropped, "
        f"every run acknowledged: {res['all_finished_ok']}"
    )
    hi = res["wall"]["ci95_pct"][1]
    off_hi = res["off_cpu"]["ci95_pct"][1]
    print(
        f"target < {TARGET_PCT} %: in-step cost {'met' if res['in_step_pct'] < TARGET_PCT else 'MISSED'}; "
        f"off-CPU waits CI upper bound {off_hi:+.3f} % ({'met' if off_hi < TARGET_PCT else 'MISSED'}); "
        f"wall-clock CI upper bound {hi:+.3f} % "
        f"({'shows it' if hi < TARGET_PCT else 'too wide or too high to show it'})"
    )


def main(argv: list[str] | None = None) -> int:
    from producers.options import Options

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=24, help="A/B block pairs")
    parser.add_argument("--steps", type=int, default=16, help="timed steps per block")
    parser.add_argument("--step-ms", type=float, default=100.0)
    parser.add_argument("--reps", type=int, default=0, help="workload repeats per step (0: calibrate to --step-ms)")
    parser.add_argument("--work", choices=("matmul", "sort"), default="matmul")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flush-interval-s", type=float, default=Options().flush_interval_s)
    parser.add_argument("--cycle-gap-s", type=float, default=Options().cycle_gap_s)
    parser.add_argument("--sample-interval-s", type=float, default=Options().sample_interval_s)
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
    started = time.monotonic()
    try:
        asyncio.run(kafka.wait_for_broker(bootstrap, 30))
        asyncio.run(kafka.ensure_topics(bootstrap, Topics(prefix).all(), 1))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "raw.json"
            cmd = [sys.executable, __file__, "--child", "--kafka", bootstrap, "--prefix", prefix, "--out", str(out)]
            cmd += ["--pairs", str(args.pairs), "--steps", str(args.steps), "--step-ms", str(args.step_ms)]
            cmd += ["--reps", str(args.reps)]
            cmd += ["--work", args.work, "--seed", str(args.seed)]
            cmd += [
                "--flush-interval-s",
                str(args.flush_interval_s),
                "--cycle-gap-s",
                str(args.cycle_gap_s),
                "--sample-interval-s",
                str(args.sample_interval_s),
            ]
            env = {**os.environ, **BLAS_ENV}
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
            if proc.returncode != 0:
                print(f"child failed with code {proc.returncode}", file=sys.stderr)
                return 1
            raw = json.loads(out.read_text())
    finally:
        broker.terminate()
        broker.wait(10)

    res = analyse(raw, args.seed)
    _print(res, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "bench": "overhead",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "elapsed_s": time.monotonic() - started,
        "work": args.work,
        "pairs": args.pairs,
        "steps_per_block": args.steps,
        "step_ms_target": args.step_ms,
        "reps": raw["reps"],
        "flush_interval_s": args.flush_interval_s,
        "cycle_gap_s": args.cycle_gap_s,
        "sample_interval_s": args.sample_interval_s,
        **res,
        "target_pct": TARGET_PCT,
        "met_in_step": res["in_step_pct"] < TARGET_PCT,
        "wall_ci_below_target": res["wall"]["ci95_pct"][1] < TARGET_PCT,
        "off_cpu_ci_below_target": res["off_cpu"]["ci95_pct"][1] < TARGET_PCT,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
