"""The settings registry: every knob, its environment variable and default.

Precedence, everywhere: **command-line flags > environment variables >
defaults**.  Each component builds its settings once, at its edge (the CLI,
``runstream.init``), with :func:`load`, and passes the object down; nothing
else in the code base reads ``os.environ``.

``log_retention_days`` (``RUNSTREAM_LOG_RETENTION_DAYS``, default 30): how long
log lines are kept, in whole days (a positive integer); the store applies it to
the ``logs`` table's TTL when it opens (``sinks.migrate.apply_log_retention``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from runstream.errors import ConfigError
from runstream.topics import DEFAULT_PREFIX, Topics

#: setting name -> environment variable
ENV_VARS: dict[str, str] = {
    "kafka": "RUNSTREAM_KAFKA",
    "clickhouse": "RUNSTREAM_CLICKHOUSE",
    "data_dir": "RUNSTREAM_DATA_DIR",
    "url": "RUNSTREAM_URL",
    "token": "RUNSTREAM_TOKEN",
    "topic_prefix": "RUNSTREAM_TOPIC_PREFIX",
    "run_id": "RUNSTREAM_RUN_ID",
    "project": "RUNSTREAM_PROJECT",
    "log_retention_days": "RUNSTREAM_LOG_RETENTION_DAYS",
}


def _default_data_dir() -> str:
    return str(Path.home() / ".runstream")


@dataclass(frozen=True)
class Settings:
    """Deployment-wide settings shared by the CLI, the SDK and the services."""

    kafka: str = "127.0.0.1:9092"
    #: clickhouse-connect DSN; empty means embedded chDB under ``data_dir``.
    clickhouse: str = ""
    data_dir: str = ""
    url: str = "http://127.0.0.1:8080"
    token: str = ""
    topic_prefix: str = DEFAULT_PREFIX
    run_id: str = ""
    project: str = ""
    #: Days a log line is kept before its daily partition is dropped (positive integer).
    log_retention_days: int = 30

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir or _default_data_dir()).expanduser()

    @property
    def clickhouse_dsn(self) -> str:
        """The DSN to open: the configured one, else chDB under the data dir."""
        return self.clickhouse or f"chdb://{(self.data_path / 'clickhouse').resolve()}"


def load(flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``flags`` (``None`` values ignored), then ``environ``, then defaults.

    ``environ`` defaults to ``os.environ``; raises :class:`ConfigError` for a
    flag that names no setting.
    """
    env = os.environ if environ is None else environ
    flags = dict(flags or {})
    names = {f.name for f in fields(Settings)}
    unknown = set(flags) - names
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name in names:
        if flags.get(name) is not None:
            values[name] = flags[name]
        elif env.get(ENV_VARS.get(name, ""), ""):
            values[name] = env[ENV_VARS[name]]
    if "log_retention_days" in values:
        values["log_retention_days"] = _positive_days(values["log_retention_days"])
    settings = Settings(**values)
    validate_kafka(settings.kafka)
    return settings


def _positive_days(value: Any) -> int:
    """``value`` as a whole number of days >= 1; :class:`ConfigError` otherwise."""
    try:
        days = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"log retention {value!r} is not a whole number of days") from None
    if days < 1 or isinstance(value, bool):
        raise ConfigError(f"log retention must be at least 1 day, not {value!r}")
    return days


def validate_kafka(servers: str) -> None:
    """Raise :class:`ConfigError` unless ``servers`` is ``host:port[,host:port...]``."""
    for part in servers.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"Kafka bootstrap server {part!r} is not host:port")


def environ_snapshot(keys: tuple[str, ...]) -> dict[str, str]:
    """The given environment variables that are set (for identity: RANK, WORLD_SIZE, ...)."""
    return {k: os.environ[k] for k in keys if k in os.environ}
