"""runstream: live observability for GPU training jobs.

Trainers write ``import runstream`` and nothing else::

    run = runstream.init(project="mnist", config={"lr": 3e-4})
    run.log({"loss": 0.31}, step=120)
    run.finish()

Importing this package is cheap: the SDK (``producers``) loads on first use
of :func:`init` or :class:`Run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Options", "Run", "init", "__version__"]

if TYPE_CHECKING:
    from producers.options import Options
    from producers.run import Run, init


def __getattr__(name: str) -> Any:
    if name in ("init", "Run"):
        from producers import run as _run

        return getattr(_run, name)
    if name == "Options":
        from producers.options import Options

        return Options
    raise AttributeError(f"module 'runstream' has no attribute {name!r}")
