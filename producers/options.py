"""The SDK's own knobs, with their units in their names.

Deployment-wide settings (bootstrap servers, topic prefix, data directory,
run id) come from :func:`runstream.settings.load` (flags > environment >
defaults); these are the trainer-side tuning knobs, set in code through
``runstream.init(options=Options(...))`` and passed down to every component.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Share of ``max_buffer_records`` that each record kind may hold.  Under a
#: sustained outage the kind whose share fills first is dropped first:
#: resources (sampled often, least valuable after the fact) before metrics,
#: logs last.  ``runs`` (start, heartbeat, finish) has its own reserve so a
#: flood of other records can never crowd out the lifecycle.
DEFAULT_SHARES: dict[str, float] = {
    "resources": 0.04,
    "evals": 0.01,
    "runs": 0.01,
    "metrics": 0.39,
    "logs": 0.55,
}


@dataclass(frozen=True)
class Options:
    """Tuning knobs of one run's SDK (see the module docstring)."""

    #: Most records held in memory, all kinds together (split by ``shares``).
    max_buffer_records: int = 1_000_000
    shares: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    #: How often the background sender looks for records to send: a record logged after a quiet
    #: spell leaves within this long.
    flush_interval_s: float = 0.05
    #: Least time between the starts of two sending cycles while records keep coming (a cycle costs
    #: the training process about a millisecond of CPU however little it carries).  A full batch
    #: (``batch_max_records``), ``flush`` and ``finish`` do not wait for it; 0: no gap.
    cycle_gap_s: float = 0.2
    #: Most records in one envelope; also the backlog that wakes the sender early.
    batch_max_records: int = 1000
    #: An envelope bigger than this is split (Kafka's default message limit is ~1 MB).
    max_envelope_bytes: int = 900_000
    #: Records taken from the buffer but not yet acknowledged, at most; above it
    #: records stay in the buffer, where its bounds and drop policy apply.
    max_unacked_records: int = 200_000
    #: Backoff between attempts to reach an unreachable broker.
    retry_initial_s: float = 0.2
    retry_max_s: float = 5.0
    #: Kafka request timeout handed to the producer.
    request_timeout_ms: int = 10_000
    #: Interval of ``runs`` heartbeat records (a run without them is ``crashed``).
    heartbeat_interval_s: float = 10.0
    #: How long ``finish`` waits for the broker to acknowledge everything.
    finish_timeout_s: float = 10.0
    #: A console line longer than this (characters) is emitted in pieces.
    max_line_chars: int = 65_536
    #: After this long without reaching the broker, envelopes go to the disk spool.
    spool_after_s: float = 5.0
    #: Disk spool bound, per data directory and broker; beyond it envelopes are dropped.
    spool_max_bytes: int = 1 << 30
    #: Redact secrets in log lines and run metadata before they leave the host
    #: (:mod:`producers.redact`); turn off only where nothing secret can be printed.
    redact: bool = True
    #: Write to the disk spool at all (when false, what cannot be sent is counted lost).
    spool: bool = True
    #: Sample host and GPU resources (``resources`` records) from a background thread.
    sample: bool = True
    #: Interval between resource samples (the first is taken at ``init``).
    sample_interval_s: float = 1.0
    #: Sample the node-wide values (GPUs, host CPU, memory, disk, network): true, false,
    #: or None for "only on local rank 0" (``LOCAL_RANK``), so that a node's GPUs are
    #: read once, not once per rank.  Every rank reports its own process tree and
    #: torch memory either way.
    sample_node_wide: bool | None = None
    #: Root of the process tree whose RSS, CPU and GPU memory are sampled (None: this process).
    sample_root_pid: int | None = None
    #: How long ``init`` waits for the sampler's static facts (GPU names, driver) to put
    #: them into the ``start`` record; past it they are left out and sampling goes on.
    sample_start_wait_s: float = 2.0

    def bounds(self) -> dict[str, int]:
        """Per-kind record bounds; each is at least 1 and they sum to at most the total."""
        return {k: max(1, int(self.max_buffer_records * s)) for k, s in self.shares.items()}
