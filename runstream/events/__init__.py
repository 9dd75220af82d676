"""One module per record kind: its fields, its limits and its validator.

Each module exposes ``validate(record, limits) -> dict`` which returns the
normalised record or raises :class:`runstream.errors.InvalidRecord` with a
reason a person can act on.  Validators are pure and cheap (they run per
record in the stream processors at hundreds of thousands per second).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runstream.events import alerts, evals, logs, metrics, resources, runs
from runstream.events.limits import Limits

Validator = Callable[[Any, Limits], dict[str, Any]]

VALIDATORS: dict[str, Validator] = {
    "runs": runs.validate,
    "metrics": metrics.validate,
    "logs": logs.validate,
    "resources": resources.validate,
    "evals": evals.validate,
    "alerts": alerts.validate,
}

__all__ = ["Limits", "VALIDATORS", "Validator"]
