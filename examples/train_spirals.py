"""Train a small MLP on two interleaved spirals, tracked by runstream.

    runstream up                      # in one terminal
    python examples/train_spirals.py  # in another; open the printed URL

The data is generated here (no download).  Every ``run.log`` call only
enqueues; ``print`` and ``logging`` output is captured as log lines.
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import torch
from torch import nn

import runstream

log = logging.getLogger("spirals")


def spirals(n: int, noise: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points per class on two interleaved spirals."""
    t = torch.rand(n, generator=generator) * 3 * math.pi + 0.5
    arm = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 10
    x = torch.cat([arm, -arm]) + noise * torch.randn(2 * n, 2, generator=generator)
    y = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    gen = torch.Generator().manual_seed(0)
    x, y = spirals(2000, 0.02, gen)
    perm = torch.randperm(len(x), generator=gen)
    x, y = x[perm], y[perm]
    split = int(0.8 * len(x))
    train_x, train_y, val_x, val_y = x[:split], y[:split], x[split:], y[split:]

    model = nn.Sequential(
        nn.Linear(2, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 2)
    )
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()

    with runstream.init(
        project="examples", name=f"spirals-h{args.hidden}", config=vars(args), tags=["example", "cpu"]
    ) as run:
        print(f"run {run.id}: {len(train_x)} train / {len(val_x)} val points")
        step = 0
        for epoch in range(args.epochs):
            model.train()
            started = time.perf_counter()
            for i in range(0, len(train_x), args.batch):
                xb, yb = train_x[i : i + args.batch], train_y[i : i + args.batch]
                loss = loss_fn(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()
                run.log({"loss": loss.item(), "grad_norm": float(grad_norm), "lr": sched.get_last_lr()[0]}, step=step)
                step += 1
            sched.step()
            model.eval()
            with torch.no_grad():
                val_logits = model(val_x)
                val_loss = loss_fn(val_logits, val_y).item()
                val_acc = (val_logits.argmax(1) == val_y).float().mean().item()
            run.log({"val_loss": val_loss, "val_acc": val_acc, "epoch_s": time.perf_counter() - started}, step=step)
            print(f"epoch {epoch + 1}/{args.epochs} step {step} val_loss {val_loss:.4f} val_acc {val_acc:.3f}")
            if epoch > 3 and val_acc < 0.6:
                log.warning("validation accuracy still %.2f after %d epochs", val_acc, epoch + 1)
        log.info("training done: final val_acc %.3f", val_acc)


if __name__ == "__main__":
    main()
