"""Who is producing: run id, node, rank and world size, from the launcher's environment.

All ranks of one job must report the same run id.  In order of precedence:
an explicit ``run_id``, ``RUNSTREAM_RUN_ID`` (``settings.run_id``), a stable
hash of torchrun's ``TORCHELASTIC_RUN_ID`` (the ``--rdzv-id``; ``--standalone``
makes a random one per job), and otherwise a new random id per process.

torchrun's default ``--rdzv-id`` is the literal ``none``, shared by every job
ever launched without one, so it is no job identity: on a single node the
ranks are told apart by their common parent (the torchrun agent); across
several nodes there is nothing to derive from, each rank gets its own id and
:attr:`Identity.warning` says to set ``RUNSTREAM_RUN_ID`` or ``--rdzv-id``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from runstream.settings import Settings, environ_snapshot
from runstream.wire import MAX_ID_CHARS

#: The launcher variables read (through :func:`runstream.settings.environ_snapshot`).
LAUNCHER_VARS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def stable_id(*parts: str) -> str:
    """A 16-hex-digit id that every process computing it from the same parts agrees on."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()[:16]


@dataclass(frozen=True)
class Identity:
    """The producing process: which run, node and rank it reports as."""

    run_id: str
    node: str
    rank: int
    local_rank: int
    world_size: int
    host: str
    pid: int
    #: Unique per process: the envelope's ``producer`` field.
    producer: str
    #: Why the run id could not be shared by the job's ranks, else empty.
    warning: str = ""


def resolve(
    env: Mapping[str, str],
    *,
    host: str,
    pid: int,
    ppid: int,
    run_id: str | None = None,
    settings_run_id: str = "",
) -> Identity:
    """The identity of a process with launcher variables ``env`` (pure; see the module doc)."""
    rank = max(0, _int(env.get("RANK"), 0))
    world = max(1, _int(env.get("WORLD_SIZE"), 1))
    local_world = max(1, _int(env.get("LOCAL_WORLD_SIZE"), world))
    nodes = max(1, _int(env.get("GROUP_WORLD_SIZE"), -(-world // local_world)))
    node_rank = env.get("NODE_RANK") or env.get("GROUP_RANK")
    warning = ""
    rid = (run_id or settings_run_id or "").strip()
    elastic = env.get("TORCHELASTIC_RUN_ID", "")
    if not rid and elastic and elastic != "none":
        rid = stable_id("torchelastic", elastic)
    elif not rid and elastic == "none":
        if nodes == 1:
            rid = stable_id("torchelastic-none", host, str(ppid), env.get("MASTER_PORT", ""))
        else:
            warning = (
                "Ranks cannot share a run id: torchrun was started without --rdzv-id. "
                "Set RUNSTREAM_RUN_ID or --rdzv-id to group them."
            )
    host = host or "localhost"
    # Across several nodes the node rank keeps two nodes apart even when
    # their hostnames clash (containers); on one node the plain hostname reads best.
    node = host if nodes == 1 or node_rank is None else f"{host}/{node_rank}"
    return Identity(
        run_id=(rid or uuid.uuid4().hex[:16])[:MAX_ID_CHARS],
        node=node[:MAX_ID_CHARS],
        rank=rank,
        local_rank=max(0, _int(env.get("LOCAL_RANK"), 0)),
        world_size=world,
        host=host,
        pid=pid,
        producer=uuid.uuid4().hex,
        warning=warning,
    )


def detect(settings: Settings, run_id: str | None = None) -> Identity:
    """The identity of this process, from its environment (see the module docstring)."""
    env = environ_snapshot((*LAUNCHER_VARS, "MASTER_PORT"))
    return resolve(
        env,
        host=socket.gethostname(),
        pid=os.getpid(),
        ppid=os.getppid(),
        run_id=run_id,
        settings_run_id=settings.run_id,
    )


def program_name() -> str:
    """The program: ``train`` (python train.py), ``pkg`` (python -m pkg), else ``run``."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    base = os.path.basename(argv0)
    stem = base.rsplit(".", 1)[0] if base.endswith(".py") else base
    if stem == "__main__":  # python -m pkg: name the package
        stem = os.path.basename(os.path.dirname(argv0))
    return stem if stem and stem not in ("-c", "-m") else "run"
