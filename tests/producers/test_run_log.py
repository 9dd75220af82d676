"""run.log's checks and bounds, and the run's lifecycle API, without a broker (producers.run)."""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runstream
from producers.options import Options
from producers.run import Run, active
from runstream import settings as settings_mod


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Any]:
    """A factory of runs whose broker is unreachable (nothing is sent; finish is quick)."""
    runs: list[Run] = []

    def make(**options: Any) -> Run:
        settings = settings_mod.load({"kafka": f"127.0.0.1:{_closed_port()}", "data_dir": str(tmp_path)}, environ={})
        opts = Options(spool=False, finish_timeout_s=0.05, retry_initial_s=5.0, **options)
        run = runstream.init(project="unit", settings=settings, options=opts, capture=False)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.finish()


def metrics(run: Run) -> list[Any]:
    return list(run._buffer.queues["metrics"])  # noqa: SLF001


def test_log_enqueues_a_copy_of_the_values(offline: Any) -> None:
    """The record keeps the values as they were at the call, with step and a timestamp."""
    run = offline()
    values = {"loss": 0.5, "acc": 1}
    run.log(values, step=7)
    values["loss"] = 99.0
    (rec,) = metrics(run)
    assert rec[1:] == (7, {"loss": 0.5, "acc": 1})
    assert rec[0] > 1_600_000_000 * 10**9


def test_numpy_values_and_steps_are_converted(offline: Any) -> None:
    """numpy scalars (values and step) become Python numbers."""
    run = offline()
    run.log({"loss": np.float32(0.25), "n": np.int64(3), "t": np.array(1.5)}, step=np.int64(4))
    (rec,) = metrics(run)
    assert rec[1:] == (4, {"loss": 0.25, "n": 3, "t": 1.5})
    assert all(type(v) in (int, float) for v in rec[2].values())


def test_mutable_values_are_read_at_the_call(offline: Any) -> None:
    """A 0-d array changed in place after run.log is logged with its value at the call."""
    run = offline()
    run.log({"loss": 1.0}, step=0)  # the name is known: the next call takes the fast checks
    value = np.array(2.5)
    run.log({"loss": value}, step=1)
    value += 1.0
    assert [r[2] for r in metrics(run)] == [{"loss": 1.0}, {"loss": 2.5}]


def test_non_numbers_are_left_out_and_counted(offline: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A value that is no number is dropped from the record, with one warning per name."""
    run = offline()
    for _ in range(3):
        run.log({"loss": 1.0, "note": "hello"}, step=1)
    assert [r[2] for r in metrics(run)] == [{"loss": 1.0}] * 3
    assert sum("name=note" in r.getMessage() for r in caplog.records) == 1
    run.log({"note": "only text"})
    assert run.stats()["invalid"]["metrics"] == 1


def test_negative_step_refuses_the_record(offline: Any) -> None:
    """A step below 0 is refused and counted invalid."""
    run = offline()
    run.log({"loss": 1.0}, step=-3)
    assert metrics(run) == []
    assert run.stats()["invalid"]["metrics"] == 1


def test_garbage_never_raises(offline: Any) -> None:
    """Whatever is passed, run.log returns None and the loop goes on."""

    class Evil:
        def __float__(self) -> float:
            raise RuntimeError("no")

        def items(self) -> Any:
            raise RuntimeError("no")

    run = offline()
    for bad in (None, [1, 2], "loss", {"x": Evil()}, Evil(), {None: 1.0}, {"x": math.nan}):
        assert run.log(bad, step=1) is None  # type: ignore[arg-type, func-returns-value]
    (only,) = metrics(run)
    assert list(only[2]) == ["x"] and math.isnan(only[2]["x"])
    assert run.stats()["invalid"]["metrics"] == 6


def test_full_metrics_queue_drops_newest(offline: Any) -> None:
    """Past its bound, new metrics records are dropped and counted, the oldest kept."""
    run = offline(max_buffer_records=1000)
    bound = run.options.bounds()["metrics"]
    for step in range(bound + 50):
        run.log({"loss": 1.0}, step=step)
    kept = metrics(run)
    assert len(kept) <= bound and kept[0][1] == 0
    assert run.stats()["dropped"]["metrics"] == bound + 50 - len(kept)


def test_log_after_finish_is_ignored(offline: Any) -> None:
    """After finish, run.log neither raises nor enqueues."""
    run = offline()
    run.finish()
    run.log({"loss": 1.0}, step=1)
    assert metrics(run) == []


def test_finish_is_idempotent_and_checks_status(offline: Any) -> None:
    """finish() twice returns the first result; an unknown status raises ValueError."""
    run = offline()
    with pytest.raises(ValueError, match="status"):
        run.finish("done")
    first = run.finish("failed")
    assert run.finish() is first
    assert run.status == "failed"


def test_init_finishes_the_previous_run(offline: Any) -> None:
    """A second init finishes the first; only the newest is active."""
    first = offline()
    second = offline()
    assert first.finished and not second.finished
    assert active() is second


def test_hooks_restored_after_finish(offline: Any) -> None:
    """sys.excepthook is the run's while it runs and the previous one afterwards."""
    before = sys.excepthook
    run = offline()
    assert sys.excepthook != before
    run.finish()
    assert sys.excepthook == before


def test_context_manager_marks_failed_on_exception(offline: Any) -> None:
    """Leaving the with-block by an exception finishes the run failed; the exception propagates."""
    run = offline()
    with pytest.raises(ZeroDivisionError), run:
        1 / 0  # noqa: B018
    assert run.finished and run.status == "failed"


def test_name_and_project_defaults(offline: Any) -> None:
    """Without a name one is generated from the program and run id; the project is as given."""
    run = offline()
    assert run.project == "unit"
    assert run.name.endswith(run.id[:6])


def test_thread_exception_logs_traceback_and_fails_run_at_end(offline: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An uncaught exception in a thread is logged as ERROR lines; the run will end failed."""
    import threading

    monkeypatch.setattr(threading, "excepthook", lambda args: None)
    # No timed drain: the sender would take lines out of the queue read below.
    run = offline(flush_interval_s=3600.0)

    def boom() -> None:
        raise RuntimeError("worker died")

    thread = threading.Thread(target=boom, name="loader")
    thread.start()
    thread.join()
    lines = [(r.line, r.stream, r.level) for r in run._buffer.queues["logs"]]  # noqa: SLF001
    assert lines[0] == ("Exception in thread loader:", "stderr", "ERROR")
    assert lines[-1] == ("RuntimeError: worker died", "stderr", "ERROR")
    assert not run.finished
    run._atexit()  # noqa: SLF001 - what happens at interpreter exit
    assert run.status == "failed"
