"""Enrichment of validated ``logs`` records: level, tags, traceback group, rank, metrics.

For each clean log record (see the record contract in ``docs``/README):

- ``level`` is detected (:mod:`streams.levels`) when the producer left it empty;
- ``tags`` lists the known error signatures (:mod:`streams.signatures`), absent when none;
- ``group`` is the id shared by the lines of one traceback (:mod:`streams.tracebacks`), absent outside one;
- ``rank`` is set when the line carries torchrun's ``[rankN]:`` prefix (it overrides the envelope's rank);

and a metric record is extracted from lines of known frameworks
(:mod:`streams.extract`): ``{"ts_ns", "step", "values", "i", "source": "log"}``
where ``i`` is the log record's index, to go on ``clean.metrics`` in an
envelope whose producer is the log producer + ``"~log"`` and whose seq is the
log envelope's (a replay yields the same identities).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from streams import extract, levels, signatures
from streams.tracebacks import TracebackGrouper

#: Suffix of the producer id of metrics extracted from a producer's log lines.
LOG_METRICS_SUFFIX = "~log"

# Batch prefilters: literals such that every line on which the per-line function could find
# something contains one of them (a superset of its own conditions), so the per-line work
# only runs on candidate lines.  ``str.find`` over the whole batch joined by newlines is a
# fast C scan; a regular-expression alternation over the same text is several times slower.
_LEVEL_HINTS = ("INFO", "WARN", "ERROR", "DEBUG", "CRITICAL", "FATAL", "Traceback", "Error", "Exception",
                "Interrupt", "Warning:", "CUDA error", "NCCL error",
                # glog/c10 prefixes at the start of a line: ``I1212 ...``, ``[W102 ...``
                "\nI", "\nW", "\nE", "\nF", "\n[I", "\n[W", "\n[E", "\n[F")
_TAG_HINTS = ("Traceback (most", "memory", "MEMORY", "CUDA", "cuda", "CUBLAS", "NCCL", "nccl", "DistBackendError",
              "Watchdog", "nan", "NaN", "NAN", "inf", "Inf", "Segmentation fault", "SIGSEGV", "Killed", "SIGKILL",
              "exitcode", "oom-kill")
_METRIC_HINTS = ("loss", "Loss", "step")
_TRACEBACK_START = "Traceback (most recent call last):"
# The same hints case-folded, searched in the lower-cased batch: one scan per word instead of one
# per spelling (every scan reads the whole batch; fewer scans beat the few extra candidate lines).
# The glog prefixes are tested on each line's first characters instead of one scan each.
_LEVEL_FOLDED = ("info", "warn", "error", "debug", "critical", "fatal", "traceback", "exception", "interrupt")
_GLOG_FIRST = frozenset("IWEF")
_GLOG_BRACKET = frozenset({"[I", "[W", "[E", "[F"})
_TAG_FOLDED = ("traceback (most", "memory", "cuda", "cublas", "nccl", "distbackenderror", "watchdog", "nan", "inf",
               "segmentation fault", "sigsegv", "killed", "sigkill", "exitcode", "oom-kill")
_METRIC_FOLDED = ("loss", "step")


def candidates(hints: tuple[str, ...], joined: str, starts: list[int]) -> list[int]:
    """Indexes, in order, of the lines of ``joined`` (``"\\n"`` + lines joined by ``"\\n"``,
    line k starting at ``starts[k]``) that contain one of ``hints``."""
    found: set[int] = set()
    last = len(starts) - 1
    for hint in hints:
        find = joined.find
        # A hint starting with a newline marks the start of a line: match from that newline.
        shift = 1 if hint[0] == "\n" else 0
        pos = find(hint)
        while pos >= 0:
            idx = bisect_right(starts, pos + shift) - 1
            found.add(idx)
            if idx >= last:
                break
            pos = find(hint, starts[idx + 1] - shift)
    return sorted(found)


def _candidate_lines(joined: str, texts: list[str], starts: list[int]) -> tuple[list[int], list[int], list[int]]:
    """The candidate lines (indexes, in order) for level detection, tags and metric extraction."""
    folded = joined.lower()
    if len(folded) != len(joined):  # a character that lower-cases to two: positions differ, use the exact hints
        return (candidates(_LEVEL_HINTS, joined, starts), candidates(_TAG_HINTS, joined, starts),
                candidates(_METRIC_HINTS, joined, starts))
    glog = [i for i, t in enumerate(texts) if t[:1] in _GLOG_FIRST or t[:2] in _GLOG_BRACKET]
    level_lines = candidates(_LEVEL_FOLDED, folded, starts)
    if glog:
        level_lines = sorted(set(level_lines).union(glog))
    return level_lines, candidates(_TAG_FOLDED, folded, starts), candidates(_METRIC_FOLDED, folded, starts)


@dataclass
class LogEnricher:
    """Enriches log batches in order; holds the traceback state of one worker (bounded)."""

    grouper: TracebackGrouper = field(default_factory=TracebackGrouper)
    extractor: extract.Extractor = field(default_factory=extract.Extractor)

    def enrich(self, producer: str, seq: int, rank: int, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add the enrichment fields to ``records`` in place; return the metric records extracted."""
        if not records:
            return []
        raw = [rec["line"] for rec in records]
        texts = raw
        rjoined = "\n" + "\n".join(raw)
        if "\x1b" in rjoined or "[rank" in rjoined:
            strip = levels.strip_decorations
            texts = []
            for rec, line in zip(records, raw, strict=True):
                text, line_rank = strip(line)
                if line_rank is not None:
                    rec["rank"] = line_rank
                texts.append(text)
            joined = "\n" + "\n".join(texts)
        else:
            joined = rjoined
        starts = list(accumulate((len(t) + 1 for t in texts[:-1]), initial=1))  # after the leading newline
        level_lines, tag_lines, metric_lines = _candidate_lines(joined, texts, starts)

        detect = levels.detect
        for idx in level_lines:
            rec = records[idx]
            if not rec["level"]:
                rec["level"] = detect(texts[idx])
        tags_of = signatures.tags_of
        for idx in tag_lines:
            tags = tags_of(texts[idx])
            if tags:
                records[idx]["tags"] = tags
        if self.grouper.open_groups() or _TRACEBACK_START in joined:
            group_of = self.grouper.group_of
            for rec, text in zip(records, texts, strict=True):
                # A producer is one process; prefixed lines are its children's (torchrun), kept apart.
                group = group_of(producer, rec.get("rank", -1) if "rank" in rec else -1, seq, rec["i"], text)
                if group:
                    rec["group"] = group
        metrics: list[dict[str, Any]] = []
        find = self.extractor
        for idx in metric_lines:
            found = find(texts[idx])
            if found is not None:
                rec = records[idx]
                metrics.append({"ts_ns": rec["ts_ns"], "step": found[0], "values": found[1], "i": rec["i"],
                                "source": "log"})
        return metrics
