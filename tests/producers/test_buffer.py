"""The bounded buffer and its overflow policy (producers.buffer)."""

from __future__ import annotations

import threading

from producers.buffer import Buffer
from producers.options import Options


def test_put_keeps_records_in_order_until_taken() -> None:
    """Records come out of take() oldest first, with the position of the first."""
    buf = Buffer({"logs": 10})
    for i in range(5):
        assert buf.put("logs", i)
    assert buf.take("logs", 3) == (0, [0, 1, 2])
    assert buf.take("logs", 10) == (3, [3, 4])


def test_full_kind_drops_newest_and_counts_it() -> None:
    """At its bound a kind keeps what it has and counts each refused record."""
    buf = Buffer({"metrics": 3})
    kept = [buf.put("metrics", i) for i in range(5)]
    assert kept == [True, True, True, False, False]
    assert list(buf.queues["metrics"]) == [0, 1, 2]
    assert buf.stats()["dropped"]["metrics"] == 2


def test_one_full_kind_does_not_drop_another() -> None:
    """Bounds are per kind: filling resources leaves room for logs."""
    buf = Buffer({"resources": 2, "logs": 2})
    for i in range(10):
        buf.put("resources", i)
    assert buf.put("logs", "line")
    assert buf.stats()["dropped"] == {
        "runs": 0,
        "metrics": 0,
        "logs": 0,
        "resources": 8,
        "evals": 0,
    }


def test_default_bounds_drop_resources_first_and_logs_last() -> None:
    """Default shares: resources get the smallest bound, logs the largest, within the total."""
    bounds = Options().bounds()
    assert bounds["resources"] < bounds["metrics"] < bounds["logs"]
    assert sum(bounds.values()) <= Options().max_buffer_records
    assert bounds["runs"] >= 1000


def test_mark_counts_everything_accepted_taken_or_not() -> None:
    """mark() is taken + waiting per kind: an exact count of accepted records."""
    buf = Buffer({"logs": 100, "metrics": 2})
    for i in range(7):
        buf.put("logs", i)
        buf.put("metrics", i)
    buf.take("logs", 4)
    assert buf.mark()["logs"] == 7
    assert buf.mark()["metrics"] == 2
    assert buf.stats()["enqueued"]["logs"] == 7


def test_concurrent_producers_lose_nothing_under_the_bound() -> None:
    """Appends from several threads while the consumer takes are all accounted for."""
    buf = Buffer({"logs": 1_000_000})
    taken: list[int] = []

    def produce(base: int) -> None:
        for i in range(20_000):
            buf.put("logs", base + i)

    threads = [threading.Thread(target=produce, args=(k * 100_000,)) for k in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        taken.extend(buf.take("logs", 1000)[1])
    for t in threads:
        t.join()
    taken.extend(buf.take("logs", 1_000_000)[1])
    assert len(taken) == len(set(taken)) == 80_000
    assert buf.mark()["logs"] == 80_000


def test_counters_start_at_zero_for_every_kind() -> None:
    """Every counter exists for every kind from the start."""
    stats = Buffer({}).stats()
    assert set(stats) == {
        "enqueued",
        "dropped",
        "invalid",
        "sent",
        "acked",
        "failed",
        "spooled",
        "lost",
    }
    assert all(v == 0 for per_kind in stats.values() for v in per_kind.values())
