"""Kafka topic names: the raw topics producers write, and the derived ones.

Every name is ``prefix + suffix``; the prefix comes from settings
(``RUNSTREAM_TOPIC_PREFIX``, default ``runstream.``).  All topics are keyed by
run id so that one run stays ordered within a partition.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Raw topics: what the SDK (or any other producer) writes.
RAW_KINDS: tuple[str, ...] = ("runs", "metrics", "logs", "resources", "evals")

#: Derived topics written by the stream processors.
ALERTS = "alerts"
DLQ = "dlq"
#: Internal to the stream processors: one small digest per clean ``logs`` batch (its counts, newest stamp and
#: alerts), from the validators to the log detectors, which then never read the batches themselves.
LOG_DIGESTS = "log-digests"

#: Validated, enriched batches, one topic per raw kind, read by the sinks.
CLEAN_PREFIX = "clean."

DEFAULT_PREFIX = "runstream."
DEFAULT_PARTITIONS = 4

#: The stream processors' default consumer group and app id.
DEFAULT_APP_ID = "runstream-streams"

#: The stream processors' state tables (faust), each backed by a changelog topic
#: partitioned like the clean topics (the tables are keyed by run id).
STREAM_TABLES: tuple[str, ...] = ("runs", "metrics", "gpus", "gpu_10s", "gpu_1m")


def changelog_topics(app_id: str = DEFAULT_APP_ID) -> list[str]:
    """The changelog topics of the stream processors' tables for the app ``app_id`` (faust's naming)."""
    return [f"{app_id}-{table}-changelog" for table in STREAM_TABLES]


@dataclass(frozen=True)
class Topics:
    """Topic names for one deployment, built from its prefix."""

    prefix: str = DEFAULT_PREFIX

    def raw(self, kind: str) -> str:
        """The raw topic for ``kind`` (one of :data:`RAW_KINDS`)."""
        if kind not in RAW_KINDS:
            raise ValueError(f"unknown record kind {kind!r}")
        return self.prefix + kind

    def clean(self, kind: str) -> str:
        """The validated topic for ``kind``, which the sinks consume."""
        if kind not in RAW_KINDS:
            raise ValueError(f"unknown record kind {kind!r}")
        return self.prefix + CLEAN_PREFIX + kind

    @property
    def dlq(self) -> str:
        return self.prefix + DLQ

    @property
    def alerts(self) -> str:
        return self.prefix + ALERTS

    @property
    def log_digests(self) -> str:
        return self.prefix + LOG_DIGESTS

    def all(self) -> list[str]:
        """Every topic a deployment needs, raw, clean and derived."""
        names = [self.raw(k) for k in RAW_KINDS]
        names += [self.clean(k) for k in RAW_KINDS]
        names += [self.dlq, self.alerts, self.log_digests]
        return names

    def kind_of(self, topic: str) -> str | None:
        """The record kind carried by a raw or clean ``topic``, else ``None``."""
        if not topic.startswith(self.prefix):
            return None
        rest = topic[len(self.prefix) :]
        if rest.startswith(CLEAN_PREFIX):
            rest = rest[len(CLEAN_PREFIX) :]
        return rest if rest in RAW_KINDS else None
