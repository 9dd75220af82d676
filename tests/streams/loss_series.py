"""Loss series for the loss_spike tests and ``bench/loss_spike.py``: recorded ones and made-up ones (seeded).

The recorded ones are the per-step losses of ``examples/train_spirals.py`` (``data/*.txt``, one value a line;
``python bench/loss_spike.py --record PATH -- FLAGS`` writes one).  The made-up ones are converging training
as it looks from the loss: a level that decays, times minibatch noise (log-normal, and near convergence a heavy
upper tail of hard batches), a plateau, warm restarts of a cosine learning-rate schedule.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).parent / "data"


def recorded(name: str) -> list[float]:
    """The recorded series ``data/{name}.txt`` (``#`` lines are comments)."""
    lines = (DATA / f"{name}.txt").read_text().splitlines()
    return [float(line) for line in lines if line and not line.startswith("#")]


def decaying(n: int = 3000, sigma: float = 0.25, seed: int = 1) -> list[float]:
    """Exponential decay to a floor, times log-normal noise of ``sigma`` (the relative spread of a minibatch)."""
    rng = random.Random(seed)
    return [(0.05 + 2.25 * math.exp(-t / 400)) * rng.lognormvariate(0.0, sigma) for t in range(n)]


def near_zero(n: int = 3000, seed: int = 2) -> list[float]:
    """A loss converged near 1e-3 with wide log-normal noise (single steps reach ten times the median)."""
    rng = random.Random(seed)
    return [1e-3 * rng.lognormvariate(0.0, 0.6) for _ in range(n)]


def plateau(n: int = 2000, seed: int = 3, digits: int | None = None) -> list[float]:
    """A loss stuck at ln 2 (a classifier at chance) with small noise; ``digits``: rounded as a log line prints
    it, so that many values are equal (a MAD of zero)."""
    rng = random.Random(seed)
    values = [math.log(2) + rng.gauss(0.0, 0.003) for _ in range(n)]
    return values if digits is None else [round(v, digits) for v in values]


def hard_batches(n: int = 4000, seed: int = 4) -> list[float]:
    """Shuffled minibatches near convergence: a level decaying from 0.7 to 2e-3, log-normal noise, and in one
    batch of four hard samples adding a Pareto-tailed excess (at most 0.15 nats: a couple of wrong samples in a
    batch of 64).  Steps reach about 8, 14, 45 and 125 times the median at the 90th, 95th, 99th and 99.9th
    percentiles: a heavier tail than ``train_spirals.py`` runs with shuffling (5, 10, 20 to 70 and 20 to 145)."""
    rng = random.Random(seed)
    out = []
    for t in range(n):
        level = 2e-3 + 0.7 * math.exp(-t / 250)
        value = level * rng.lognormvariate(0.0, 0.35)
        if rng.random() < 0.25:
            value += min(0.15, level * 12.0 * (rng.random() ** -0.5 - 1))
        out.append(value)
    return out


def warm_restarts(n: int = 3000, seed: int = 5) -> list[float]:
    """A decaying loss under a cosine schedule with warm restarts (first period 200 steps, doubling): after each
    restart the learning rate is back at its peak and the loss rises to about twice its level over some ten
    steps, then falls again as the rate anneals."""
    rng = random.Random(seed)
    out = []
    smooth = 1.0
    period, start = 200, 0
    for t in range(n):
        if t - start == period:
            start, period = t, period * 2
        rate = 0.5 * (1 + math.cos(math.pi * (t - start) / period))  # of its peak
        smooth += 0.1 * (rate - smooth)  # the loss follows the rate with a lag
        level = 0.02 + 0.6 * math.exp(-t / 300)
        out.append(level * (1 + smooth) * rng.lognormvariate(0.0, 0.2))
    return out


#: Converging series that hold no spike: the detector must stay silent on each.
CONVERGING: dict[str, Callable[[], list[float]]] = {
    "train_spirals": lambda: recorded("train_spirals_loss"),
    "train_spirals_lr1e-2": lambda: recorded("train_spirals_lr1e-2_loss"),
    "decaying": decaying,
    "decaying_noisier": lambda: decaying(sigma=0.45, seed=11),
    "near_zero": near_zero,
    "plateau": plateau,
    "plateau_rounded": lambda: plateau(digits=4),
    "hard_batches": hard_batches,
    "warm_restarts": warm_restarts,
}
