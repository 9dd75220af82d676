"""Settings precedence: flags > environment > defaults."""

from __future__ import annotations

import pytest

from runstream import settings
from runstream.errors import ConfigError


def test_defaults_without_flags_or_environment() -> None:
    """With nothing set, the documented defaults apply."""
    s = settings.load({}, environ={})
    assert s.kafka == "127.0.0.1:9092" and s.topic_prefix == "runstream."


def test_environment_overrides_defaults() -> None:
    """RUNSTREAM_* variables override defaults."""
    s = settings.load({}, environ={"RUNSTREAM_KAFKA": "10.0.0.1:9093", "RUNSTREAM_TOPIC_PREFIX": "x."})
    assert s.kafka == "10.0.0.1:9093" and s.topics.raw("logs") == "x.logs"


def test_flags_override_environment() -> None:
    """A flag wins over the environment; a None flag does not count."""
    s = settings.load(
        {"kafka": "h:1", "topic_prefix": None}, environ={"RUNSTREAM_KAFKA": "e:2", "RUNSTREAM_TOPIC_PREFIX": "env."}
    )
    assert s.kafka == "h:1" and s.topic_prefix == "env."


def test_embedded_dsn_lives_under_the_data_dir(tmp_path: object) -> None:
    """Without RUNSTREAM_CLICKHOUSE the DSN is chDB under the data dir."""
    s = settings.load({"data_dir": str(tmp_path)}, environ={})
    assert s.clickhouse_dsn == f"chdb://{tmp_path}/clickhouse"


@pytest.mark.parametrize("bad", ["nohost", "h:", ":9092", "h:abc"])
def test_bad_kafka_address_is_a_config_error(bad: str) -> None:
    """A malformed bootstrap address is refused with ConfigError."""
    with pytest.raises(ConfigError):
        settings.load({"kafka": bad}, environ={})


def test_unknown_flag_is_refused() -> None:
    """A flag that names no setting is an error, not silently ignored."""
    with pytest.raises(ConfigError):
        settings.load({"kafak": "x:1"}, environ={})


def test_log_retention_defaults_to_30_days_and_reads_the_environment() -> None:
    """log_retention_days is 30 by default and RUNSTREAM_LOG_RETENTION_DAYS sets it as an int."""
    assert settings.load({}, environ={}).log_retention_days == 30
    s = settings.load({}, environ={"RUNSTREAM_LOG_RETENTION_DAYS": "7"})
    assert s.log_retention_days == 7


@pytest.mark.parametrize("bad", ["0", "-3", "seven", "1.5"])
def test_bad_log_retention_is_a_config_error(bad: str) -> None:
    """A retention that is not a whole number of days >= 1 is refused with ConfigError."""
    with pytest.raises(ConfigError):
        settings.load({}, environ={"RUNSTREAM_LOG_RETENTION_DAYS": bad})
