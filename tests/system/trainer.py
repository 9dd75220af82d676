"""A real torch training loop that uses the SDK and writes down what it emitted.

Run by the system tests as a separate process; ``--truth`` receives a JSON
file with every metric point and every line (with the time window in which
it was emitted), the oracle the tests compare the stored data with.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import torch
from torch import nn

import runstream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--truth", required=True)
    parser.add_argument("--tag", default="")
    parser.add_argument("--fail-at", type=int, default=-1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log = logging.getLogger("trainer")

    truth: dict[str, object] = {"metrics": {}, "lines": []}
    metrics: dict[str, list[list[float]]] = truth["metrics"]  # type: ignore[assignment]
    lines: list[dict[str, object]] = truth["lines"]  # type: ignore[assignment]

    def emit(kind: str, text: str, level: str = "") -> None:
        before = time.time_ns()
        if kind == "print":
            print(text)
            stream, lvl = "stdout", ""
        elif kind == "stderr":
            print(text, file=sys.stderr)
            stream, lvl = "stderr", ""
        else:
            getattr(log, level.lower())(text)
            stream, lvl = "logging", level
        lines.append({"line": text, "stream": stream, "level": lvl, "after": before, "before": time.time_ns()})

    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = x @ torch.randn(8, 1) + 0.1 * torch.randn(512, 1)
    model = nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run = runstream.init(
        project="system-tests",
        name=f"trainer-{args.tag}",
        config={"lr": 0.05, "steps": args.steps, "tag": args.tag},
        tags=["test"],
    )
    truth["run_id"] = run.id
    try:
        for step in range(args.steps):
            idx = torch.randint(0, 512, (32,))
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            values = {"loss": loss.item(), "weight_norm": model.weight.norm().item(), "lr": opt.param_groups[0]["lr"]}
            run.log(values, step=step)
            for name, value in values.items():
                metrics.setdefault(name, []).append([step, value])
            if step % 10 == 0:
                emit("print", f"step {step} loss {values['loss']:.6f} {args.tag}")
            if step % 50 == 25:
                emit("log", f"checkpoint saved at step {step} {args.tag}", "INFO")
            if step % 100 == 75:
                emit("log", f"loss plateau suspected at step {step} {args.tag}", "WARNING")
            if step == args.steps // 2:
                emit("log", f"gradient overflow detected {args.tag}", "ERROR")
                emit("stderr", f"raw stderr line at step {step} {args.tag}")
            if step == args.fail_at:
                with open(args.truth, "w") as f:
                    json.dump(truth, f)
                raise RuntimeError(f"boom at step {step} {args.tag}")
            time.sleep(0.001)
        emit("print", f"training finished {args.tag}")
    finally:
        with open(args.truth, "w") as f:
            json.dump(truth, f)
    run.finish()


if __name__ == "__main__":
    main()
