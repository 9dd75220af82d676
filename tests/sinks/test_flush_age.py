"""How long the sink lets rows wait before a flush: short when quiet, longer when busy or behind."""

from __future__ import annotations

from sinks.writer import WriterConfig, flush_age_ms

CONFIG = WriterConfig(max_age_ms=250, busy_max_age_ms=1000, busy_age_factor=2.0)


def test_quiet_stream_flushes_at_max_age() -> None:
    """After short flushes the age limit is max_age_ms."""
    assert flush_age_ms(CONFIG, last_flush_s=0.03, behind=False) == 250


def test_long_flushes_stretch_the_age_by_the_factor() -> None:
    """After a 300 ms flush the next waits busy_age_factor times as long."""
    assert flush_age_ms(CONFIG, last_flush_s=0.3, behind=False) == 600


def test_stretched_age_is_capped_by_busy_max_age() -> None:
    """However long the last flush took, rows wait at most busy_max_age_ms."""
    assert flush_age_ms(CONFIG, last_flush_s=5.0, behind=False) == 1000


def test_behind_the_log_end_waits_the_busy_max_age() -> None:
    """A consumer behind the log end lets rows wait busy_max_age_ms (larger inserts while catching up)."""
    assert flush_age_ms(CONFIG, last_flush_s=0.0, behind=True) == 1000


def test_busy_limit_below_max_age_never_shortens_it() -> None:
    """A busy_max_age_ms below max_age_ms leaves max_age_ms in every case (adaptation off)."""
    config = WriterConfig(max_age_ms=60_000, busy_max_age_ms=1000)
    assert {flush_age_ms(config, s, b) for s in (0.0, 1.0, 100.0) for b in (False, True)} == {60_000}
