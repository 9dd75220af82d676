"""A run's status, derived from the lifecycle events of all its ranks (pure)."""

from __future__ import annotations

from collections.abc import Iterable

#: One rank of a run: (rank, final status or "" while unfinished, finished µs, exit code, reason).
RankRow = tuple[int, str, int, int | None, str]


def derive_status(
    ranks: Iterable[RankRow], last_us: int, now_us: int, crashed_after_s: float
) -> tuple[str, int | None]:
    """A run's status and end time (µs) from its ranks and when it was last heard of.

    ``failed`` if any rank failed, else ``killed`` if any was killed, ``finished`` once
    every rank seen has finished; otherwise ``running``, or ``crashed`` when
    nothing was heard for ``crashed_after_s``.
    """
    ranks = list(ranks)
    finals = [(r[1], r[2]) for r in ranks if r[1]]
    for wanted in ("failed", "killed"):
        if any(status == wanted for status, _ in finals):
            return wanted, max(at for _, at in finals)
    if ranks and len(finals) == len(ranks):
        return "finished", max(at for _, at in finals)
    if now_us - last_us > crashed_after_s * 1e6:
        return "crashed", last_us
    return "running", None


def outcome(status: str, ranks: list[RankRow], crashed_after_s: float) -> tuple[int | None, str]:
    """The exit code and reason that explain a run's status: the first rank to end that way."""
    if status == "crashed":
        return None, f"no heartbeat for more than {crashed_after_s:g} s"
    deciding = sorted((r for r in ranks if r[1] == status), key=lambda r: (r[2], r[0]))
    if not deciding:
        return None, ""
    return deciding[0][3], deciding[0][4]
