"""run.log's compiled fast path (producers/_hotpath.c) queues and counts exactly what the Python path does."""

from __future__ import annotations

import math
import socket
import time
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runstream
from producers.options import Options
from producers.records import NAME_MAX, plain_values
from producers.run import Run
from runstream import settings as settings_mod

hotpath = pytest.importorskip("producers._hotpath", reason="the C fast path was not built (no C compiler)")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, Run]]:
    """Two offline runs: the first logs through the compiled path, the second through the Python one."""
    settings = settings_mod.load(
        {"kafka": f"127.0.0.1:{_closed_port()}", "data_dir": str(tmp_path_factory.mktemp("hot"))}, environ={}
    )
    # No timed drain (flush_interval_s): the sender would take records out of the queues the tests read.
    opts = Options(
        spool=False,
        sample=False,
        finish_timeout_s=0.05,
        retry_initial_s=60.0,
        max_buffer_records=1000,
        flush_interval_s=3600.0,
    )
    runs = []
    for _ in range(2):
        # init finishes the process's previous run: keep both alive by making them directly.
        runs.append(Run(project="unit", settings=settings, options=opts, capture=False))
    # The sender's one cycle at start (it takes the start record); after it, none for an hour.
    deadline = time.monotonic() + 10
    while any(run._sender.cycles < 1 for run in runs) and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.01)
    assert all(run._sender.cycles == 1 for run in runs)  # noqa: SLF001
    yield runs[0], runs[1]
    for run in runs:
        run.finish()


def _queued(run: Run) -> list[tuple[Any, dict[str, Any]]]:
    """The metrics records queued, as the sender sees them (values made plain), without their time."""
    return [(step, plain_values(values)) for _, step, values in run._buffer.queues["metrics"]]  # noqa: SLF001


def _reset(run: Run) -> None:
    run._buffer.queues["metrics"].clear()  # noqa: SLF001
    run._known.clear()  # noqa: SLF001


def _counts(run: Run) -> tuple[Any, Any, set[str]]:
    stats = run.stats()
    return stats["dropped"]["metrics"], stats["invalid"]["metrics"], set(run._warned)  # noqa: SLF001


def test_run_log_is_the_compiled_path(pair: tuple[Run, Run]) -> None:
    """Where the extension is built, a run's log is it (no Python frame per call)."""
    hot, _ = pair
    assert isinstance(hot.log, hotpath.MetricsLog)


_names = st.one_of(
    st.sampled_from(["loss", "train/loss", "lr", "a b", "x" * NAME_MAX, "x" * (NAME_MAX + 1), "", "tab\there"]),
    st.text(max_size=12),
    st.sampled_from([None, 3, b"loss", ("a",)]),
)
_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([True, False, 0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
)
_odd = st.sampled_from(
    [
        np.float32(0.5),
        np.int64(3),
        np.array(1.5),
        np.array([1.0, 2.0]),
        Fraction(1, 3),
        "text",
        None,
        [1.0],
        {"in": 2.0},
    ]
)
_values = st.one_of(
    st.dictionaries(_names, _numbers | _odd, max_size=6),
    st.sampled_from([None, [("loss", 1.0)], "loss", 3.0]),
)
_steps = st.one_of(
    st.none(),
    st.integers(-5, 2**64),
    st.sampled_from([True, 2.0, 2.5, np.int64(7), "3", -1]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(_values, _steps), min_size=1, max_size=8))
def test_compiled_path_queues_and_counts_what_the_python_path_does(
    pair: tuple[Run, Run], calls: list[tuple[Any, Any]]
) -> None:
    """For any values and steps, good or bad: the same records (after the sender makes values plain), the same
    drop and invalid counts, the same warnings; neither raises."""
    hot, cold = pair
    for run in pair:
        _reset(run)
    before = [_counts(run) for run in pair]
    for values, step in calls:
        assert hot.log(values, step) is None
        assert Run.log(cold, values, step) is None
    assert hot._sender.cycles == cold._sender.cycles == 1  # noqa: SLF001 - nothing drained the queues read here
    want = _queued(cold)
    got = _queued(hot)
    assert len(got) == len(want)
    for (gs, gv), (ws, wv) in zip(got, want, strict=True):
        assert gs == ws and list(gv) == list(wv)
        for name in gv:
            assert gv[name] == wv[name] or (math.isnan(gv[name]) and math.isnan(wv[name]))
            assert type(gv[name]) is type(wv[name])
    after = [_counts(run) for run in pair]
    assert after[0][0] - before[0][0] == after[1][0] - before[1][0]
    assert after[0][1] - before[0][1] == after[1][1] - before[1][1]
    assert after[0][2] == after[1][2]


def test_keyword_and_positional_calls(pair: tuple[Run, Run]) -> None:
    """log(values), log(values, 3), log(values, step=3), log(values=..., step=...); a wrong call is a TypeError
    as it would be for the Python method."""
    hot, _ = pair
    _reset(hot)
    hot.log({"loss": 1.0})
    hot.log({"loss": 2.0}, 3)
    hot.log({"loss": 3.0}, step=4)
    hot.log(values={"loss": 4.0}, step=5)
    assert _queued(hot) == [(None, {"loss": 1.0}), (3, {"loss": 2.0}), (4, {"loss": 3.0}), (5, {"loss": 4.0})]
    for args, kwargs in (
        ((), {}),
        (({"a": 1.0}, 1, 2), {}),
        (({"a": 1.0},), {"stp": 1}),
        (({"a": 1.0}, 1), {"step": 2}),
    ):
        with pytest.raises(TypeError):
            hot.log(*args, **kwargs)


def test_full_queue_drops_and_counts(pair: tuple[Run, Run]) -> None:
    """At its bound the compiled path hands the call to the Python path, which drops and counts it."""
    hot, _ = pair
    _reset(hot)
    bound = hot._mbound  # noqa: SLF001
    dropped = hot.stats()["dropped"]["metrics"]
    for step in range(bound + 10):
        hot.log({"loss": 1.0}, step=step)
    assert len(_queued(hot)) == bound
    assert hot.stats()["dropped"]["metrics"] - dropped == 10


class _Sender:
    """What MetricsLog reads of the sender: a pending flag and a wake() that counts."""

    def __init__(self) -> None:
        self.wake_pending = False
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1


def test_wakes_the_sender_once_a_batch_waits() -> None:
    """Once the queue holds ``wake_at`` records, a call wakes the sender, unless a wake is pending."""
    queue: deque[Any] = deque()
    sender = _Sender()
    slow_calls: list[Any] = []
    log = hotpath.MetricsLog(queue, 100, set(), 5, sender, lambda v, s: slow_calls.append((v, s)), NAME_MAX)
    for step in range(6):  # the sixth call finds five records waiting
        log({"loss": 1.0}, step)
    assert (len(queue), sender.woken) == (6, 1)
    sender.wake_pending = True
    log({"loss": 1.0}, 6)
    assert sender.woken == 1
    sender.wake_pending = False
    log({"loss": 1.0}, 7)
    assert sender.woken == 2 and slow_calls == []
    assert [r[1:] for r in queue][-1] == (7, {"loss": 1.0})


def test_what_the_compiled_path_hands_on() -> None:
    """A full queue, a name it cannot judge (unless known), a value that is no plain number, a step that is no
    plain int >= 0: each goes to the Python path with the same arguments."""
    queue: deque[Any] = deque()
    known = {"é"}
    slow_calls: list[Any] = []
    log = hotpath.MetricsLog(queue, 3, known, 100, _Sender(), lambda v, s: slow_calls.append((v, s)), NAME_MAX)
    handed = [
        ({"ü": 1.0}, 1),
        ({"": 1.0}, 1),
        ({"x" * (NAME_MAX + 1): 1.0}, 1),
        ({"a": np.float32(1.0)}, 1),
        ({"a": 2**64}, 1),
        ({"a": 1.0}, -1),
        ({"a": 1.0}, 2**64),
        ({"a": 1.0}, np.int64(1)),
        ({}, 1),
    ]
    for values, step in handed:
        log(values, step)
    assert slow_calls == handed and not queue
    for values, step in (({"é": 1.0}, None), ({"a": 2**64 - 1}, 0), ({"a": -(2**63), "b": True}, 2**63 - 1)):
        log(values, step)
    assert len(queue) == 3
    log({"a": 1.0}, 1)  # the queue is at its bound
    assert slow_calls[-1] == ({"a": 1.0}, 1) and len(queue) == 3


def test_log_after_finish_is_silent(tmp_path: Path) -> None:
    """finish() swaps the queues for ones that hold nothing: the compiled path follows (nothing queued)."""
    settings = settings_mod.load({"kafka": f"127.0.0.1:{_closed_port()}", "data_dir": str(tmp_path)}, environ={})
    run = runstream.init(
        project="unit",
        settings=settings,
        options=Options(spool=False, sample=False, finish_timeout_s=0.05),
        capture=False,
    )
    run.finish()
    assert isinstance(run.log, hotpath.MetricsLog)
    run.log({"loss": 1.0}, step=1)
    assert _queued(run) == []
