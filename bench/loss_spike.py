"""The loss_spike detector: its alerts on converging loss series and on planted spikes, and its cost per value.

Alerts: the series of ``tests/streams/loss_series.py`` (the recorded ``examples/train_spirals.py`` losses and
made-up converging ones), each with nothing planted and with a planted spike (five or ten times the level for
five steps from step 2000 of the longer ones, 1200 of the recorded ones), and the loss series the project's
extractor finds in the real training logs (``/work/shared/data/real-logs/``, when present).  Cost: CPU time of
:func:`streams.losses.on_loss_column` over batches of 1,000 values of one series (what a metrics batch costs the
worker per loss value), best of ``--repeats`` passes from a fresh state, for the bench's metric loss
(``bench/streams.py``: ``2 / (1 + step / 1000)`` plus uniform noise of 0.01), a noisy decay and shuffled hard
batches (heavy-tailed: the most values that pass the level test); and of :func:`streams.losses.on_metric`, one
value at a time.

    python bench/loss_spike.py [--values 200000] [--repeats 5] [--json bench/results/loss_spike.json]
    python bench/loss_spike.py --record tests/streams/data/train_spirals_loss.txt [-- FLAGS of train_spirals.py]
    python bench/loss_spike.py --runs 20 [-- FLAGS of train_spirals.py]

``--record`` runs ``examples/train_spirals.py`` (needs torch) with ``runstream.init`` replaced by a recorder,
so no broker is needed, and writes its per-step ``loss`` values, one a line.  ``--runs N`` records N runs (the
example seeds its data, not its model: every run differs) and prints each one's loss_spike alerts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import re
import runpy
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.detect import DetectorSettings  # noqa: E402
from streams.losses import SeriesState, is_loss, on_loss_column, on_metric  # noqa: E402
from tests.streams import loss_series  # noqa: E402

REAL_LOGS = Path("/work/shared/data/real-logs")
BATCH = 1000
CONF = DetectorSettings()


def _alert_steps(values: list[float]) -> list[int]:
    """Steps (indexes) of the loss_spike alerts over ``values``, fed a batch of 1,000 at a time."""
    state = SeriesState()
    out: list[int] = []
    for start in range(0, len(values), BATCH):
        chunk = values[start : start + BATCH]
        steps = list(range(start, start + len(chunk)))
        found = on_loss_column(state, CONF, node="n", rank=0, metric="loss", values=chunk, steps=steps, stamps=steps)
        out += [start + k for k, alert in found if alert["kind"] == "loss_spike"]
    return out


def _planted(values: list[float], factor: float) -> tuple[list[float], int]:
    at = 2000 if len(values) > 2500 else 1200
    return [v * factor if at <= k < at + 5 else v for k, v in enumerate(values)], at


def _real_series() -> dict[str, list[float]]:
    """Loss series of the real logs, as ``streams.extract`` reads their lines (JSON lines: their loss keys); one
    per file and name, split where the step goes back (a resumed run); those of 60 values or more."""
    from streams.extract import extract

    ansi = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
    rank = re.compile(r"^\s*(\[rank\d+\]:|\d+: )")
    out: dict[str, list[float]] = {}
    for path in sorted(REAL_LOGS.glob("*")):
        if path.suffix in (".md", ".tsv"):
            continue
        points: dict[str, list[tuple[int, float]]] = {}
        for raw in re.split(r"[\r\n]", path.read_text(errors="replace")):
            line = ansi.sub("", raw)
            if path.suffix == ".json":
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict):
                        step = int(doc.get("iteration", doc.get("step", -1)) or 0)
                        for name, value in doc.items():
                            if isinstance(value, (int, float)) and is_loss(name):
                                points.setdefault(name, []).append((step, float(value)))
                continue
            got = extract(rank.sub("", line))
            if got:
                for name, value in got[1].items():
                    if is_loss(name):
                        points.setdefault(name, []).append((got[0], value))
        for name, pts in points.items():
            part: list[float] = []
            last, seen, index = -1, set(), 0
            for step, value in pts:
                if (step, value) in seen:  # a progress bar redrawn
                    continue
                seen.add((step, value))
                if 0 <= step < last:
                    if len(part) >= 60:
                        out[f"{path.name}:{name}#{index}"] = part
                    part, index = [], index + 1
                part.append(value)
                last = step
            if len(part) >= 60:
                out[f"{path.name}:{name}#{index}"] = part
    return out


def _cost_ns(values: list[float], repeats: int) -> tuple[float, float]:
    """CPU ns per value of on_loss_column over batches of 1,000 and of on_metric value by value (best passes)."""
    batches = [values[k : k + BATCH] for k in range(0, len(values), BATCH)]
    steps = list(range(BATCH))
    column = single = float("inf")
    for _ in range(repeats):
        state = SeriesState()
        t0 = time.process_time()
        for chunk in batches:
            on_loss_column(state, CONF, node="n", rank=0, metric="loss", values=chunk, steps=steps, stamps=steps)
        column = min(column, time.process_time() - t0)
    for _ in range(max(1, repeats // 2)):
        state = SeriesState()
        t0 = time.process_time()
        for step, value in enumerate(values):
            on_metric(state, CONF, node="n", rank=0, metric="loss", step=step, ts_ns=step, value=value)
        single = min(single, time.process_time() - t0)
    return 1e9 * column / len(values), 1e9 * single / len(values)


def _record(path: Path, flags: list[str]) -> None:
    """Run examples/train_spirals.py with ``flags`` and runstream.init replaced by a recorder; write its losses."""
    import runstream

    losses: list[float] = []

    class _Recorder:
        id = "offline"

        def log(self, values: dict[str, float], step: int | None = None) -> None:
            if "loss" in values:
                losses.append(float(values["loss"]))

    @contextlib.contextmanager
    def _init(**_: Any) -> Iterator[_Recorder]:
        yield _Recorder()

    runstream.init = _init  # type: ignore[assignment]
    sys.argv = ["train_spirals.py", *flags]
    runpy.run_path(str(ROOT / "examples" / "train_spirals.py"), run_name="__main__")
    shown = " ".join(flags) or "default flags"
    head = (
        f"# loss per step of one run of `python examples/train_spirals.py` ({shown}), written by `python "
        "bench/loss_spike.py --record` (the example seeds its data, not its model: every run differs)\n"
    )
    path.write_text(head + "".join(f"{v:.9g}\n" for v in losses))
    print(f"{len(losses)} losses written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--values", type=int, default=200_000, help="values per series for the cost")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "loss_spike.json")
    parser.add_argument("--record", type=Path, help="write the losses of examples/train_spirals.py here and stop")
    parser.add_argument("--runs", type=int, default=0, help="count the alerts of this many train_spirals.py runs")
    args, flags = parser.parse_known_args()
    flags = [f for f in flags if f != "--"]
    if args.record:
        _record(args.record, flags)
        return
    if args.runs:
        counts = []
        with tempfile.TemporaryDirectory(prefix="bench-loss-spike-") as tmp:
            for run in range(args.runs):
                path = Path(tmp) / f"run{run}.txt"
                command = [sys.executable, __file__, "--record", str(path), "--", *flags]
                subprocess.run(command, check=True, capture_output=True)
                lines = path.read_text().splitlines()
                counts.append(len(_alert_steps([float(x) for x in lines if x and not x.startswith("#")])))
        shown = " ".join(flags) or "default flags"
        print(f"{args.runs} runs of train_spirals.py ({shown}): loss_spike alerts {counts}, {sum(counts)} in all")
        return

    print("loss_spike alerts; planted: 5 or 10 times the level for five steps (alerts from its start to 3 steps")
    print("after its end, and the first one's step from its start)")
    print(f"{'series':22} {'values':>7} {'alerts':>7} {'planted 5x':>11} {'planted 10x':>12}")
    alerts: dict[str, Any] = {}
    for name, make in loss_series.CONVERGING.items():
        values = make()
        row: dict[str, Any] = {"values": len(values), "alerts": _alert_steps(values)}
        for factor in (5.0, 10.0):
            planted, at = _planted(values, factor)
            row[f"planted_{factor:g}x"] = {"at": at, "alerts": _alert_steps(planted)}
        alerts[name] = row
        cells = []
        for key in ("planted_5x", "planted_10x"):
            at = row[key]["at"]
            near = [k - at for k in row[key]["alerts"] if at <= k < at + 8]
            cells.append(f"{len(near)} at +{near[0]}" if near else "0")
        print(f"{name:22} {len(values):>7} {len(row['alerts']):>7} {cells[0]:>11} {cells[1]:>12}")
    real: dict[str, Any] = {}
    if REAL_LOGS.is_dir():
        for name, values in _real_series().items():
            real[name] = {"values": len(values), "alerts": _alert_steps(values)}
        flagged = {k: v["alerts"] for k, v in real.items() if v["alerts"]}
        print(f"real logs: {len(real)} loss series, {sum(len(v) for v in flagged.values())} alerts")
        for name, steps in flagged.items():
            print(f"  {name}: {len(steps)} at {steps[:6]}{' ...' if len(steps) > 6 else ''}")

    rng = random.Random(7)
    shapes = {
        "bench metrics loss": [2.0 / (1 + k / 1000) + rng.random() * 0.01 for k in range(args.values)],
        "decaying, noise 0.25": loss_series.decaying(n=args.values),
        "hard batches": loss_series.hard_batches(n=args.values),
    }
    print(f"\ncost per value, CPU ns ({args.values} values, batches of {BATCH}, best of {args.repeats})")
    print(f"{'series':24} {'on_loss_column':>15} {'on_metric':>10}")
    cost: dict[str, Any] = {}
    for name, values in shapes.items():
        column, single = _cost_ns(values, args.repeats)
        cost[name] = {"on_loss_column_ns": round(column, 1), "on_metric_ns": round(single, 1)}
        print(f"{name:24} {column:>15.1f} {single:>10.1f}")
    doc = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "values": args.values,
        "repeats": args.repeats,
        "alerts": alerts,
        "real_logs": real,
        "cost": cost,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
