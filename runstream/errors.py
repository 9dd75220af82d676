"""Base errors shared by every stage.

Each error says whether retrying the same operation can succeed
(``retriable``), as aiokafka's ``KafkaError.retriable`` does: a retriable
error backs off and retries; a permanent one is reported (dead-letter topic,
4xx answer) and the component moves on.
"""

from __future__ import annotations


class RunstreamError(Exception):
    """Base of every runstream error."""

    retriable: bool = False


class DecodeError(RunstreamError):
    """Bytes on a topic are not a well-formed batch envelope."""


class UnsupportedVersion(DecodeError):
    """The envelope's major schema version is not one this code reads."""


class InvalidRecord(RunstreamError):
    """One record of a batch breaks the contract; the rest of its batch is fine."""


class ConfigError(RunstreamError):
    """A setting, flag or environment variable has a value that cannot work."""


class QueryError(RunstreamError):
    """A query's parameters are wrong (answered as a 4xx with the message)."""


class QueryLimitExceeded(QueryError):
    """A query went over its cost limits (time, rows read, memory)."""


class StorageUnavailable(RunstreamError):
    """ClickHouse could not be reached or answered a transient error."""

    retriable = True
