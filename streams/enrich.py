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

Cost per line matters (the target is 200k log lines/s per worker).  Level,
tags and extraction recipe depend on a line's *shape* only (its digits made 0,
see :data:`_SHAPE`), and real logs repeat shapes (progress lines, per-step
prints), so a bounded memo (:class:`FactsMemo`) answers most lines with one
dictionary look-up per line done in C; of the lines of unknown shape, one per
shape goes through the batch prefilters (:func:`candidates`) and then the
per-line functions, and the others of its batch get its facts.  The metrics of
the lines of one recipe are cooked together (:func:`streams.extract.cook_columns`),
and the traceback grouper only sees the lines from a traceback's start on.  The
answers are always the per-line functions' (``tests/streams/test_enrich_batch.py``
holds them equal on the real-log corpus and on generated lines).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, compress, count, islice, repeat
from operator import contains, is_, itemgetter
from typing import Any, NamedTuple, TypeAlias

from streams import extract, levels, signatures
from streams.tracebacks import TracebackGrouper

#: Suffix of the producer id of metrics extracted from a producer's log lines.
LOG_METRICS_SUFFIX = "~log"

# Batch prefilters: literals such that every line on which the per-line function could find
# something contains one of them (a superset of its own conditions), so the per-line work
# only runs on candidate lines.  ``str.find`` over the whole batch joined by newlines is a
# fast C scan; a regular-expression alternation over the same text is several times slower.
_LEVEL_HINTS = (
    "INFO",
    "WARN",
    "ERROR",
    "DEBUG",
    "CRITICAL",
    "FATAL",
    "Traceback",
    "Error",
    "Exception",
    "Interrupt",
    "Warning:",
    "CUDA error",
    "NCCL error",
    # glog/c10 prefixes at the start of a line: ``I1212 ...``, ``[W102 ...``
    "\nI",
    "\nW",
    "\nE",
    "\nF",
    "\n[I",
    "\n[W",
    "\n[E",
    "\n[F",
)
_TAG_HINTS = (
    "Traceback (most",
    "memory",
    "MEMORY",
    "CUDA",
    "cuda",
    "CUBLAS",
    "NCCL",
    "nccl",
    "DistBackendError",
    "Watchdog",
    "nan",
    "NaN",
    "NAN",
    "inf",
    "Inf",
    "Segmentation fault",
    "SIGSEGV",
    "Killed",
    "SIGKILL",
    "exitcode",
    "oom-kill",
)
_METRIC_HINTS = ("loss", "Loss", "step")
_TRACEBACK_START = "Traceback (most recent call last):"
_LINE_TRACEBACK_START = "\n" + _TRACEBACK_START
# A rank prefix starts a line: "\n[rank" is also a longer needle than "[rank", so a faster scan.
_LINE_RANK = "\n[rank"
# The same hints case-folded, searched in the lower-cased batch: one scan per word instead of one
# per spelling (every scan reads the whole batch; fewer scans beat the few extra candidate lines).
# The glog prefixes are tested on each line's first characters instead of one scan each.
_LEVEL_FOLDED = ("info", "warn", "error", "debug", "critical", "fatal", "traceback", "exception", "interrupt")
_GLOG_FIRST = frozenset("IWEF")
_GLOG_BRACKET = frozenset({"[I", "[W", "[E", "[F"})
_TAG_FOLDED = (
    "traceback (most",
    "memory",
    "cuda",
    "cublas",
    "nccl",
    "distbackenderror",
    "watchdog",
    "nan",
    "inf",
    "segmentation fault",
    "sigsegv",
    "killed",
    "sigkill",
    "exitcode",
    "oom-kill",
)
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
        return (
            candidates(_LEVEL_HINTS, joined, starts),
            candidates(_TAG_HINTS, joined, starts),
            candidates(_METRIC_HINTS, joined, starts),
        )
    glog = [i for i, t in enumerate(texts) if t[:1] in _GLOG_FIRST or t[:2] in _GLOG_BRACKET]
    level_lines = candidates(_LEVEL_FOLDED, folded, starts)
    if glog:
        level_lines = sorted(set(level_lines).union(glog))
    return level_lines, candidates(_TAG_FOLDED, folded, starts), candidates(_METRIC_FOLDED, folded, starts)


#: Line shapes: the UTF-8 bytes of a line with the ASCII digits 1-9 made 0.  Every test in
#: :mod:`streams.levels`, :mod:`streams.signatures` and :mod:`streams.extract` treats the digits alike
#: (``\\d``, ``\\w``, word boundaries, number spans) but one: the literal ``-9`` of ``exitcode: -9``.  So the
#: lines holding ``exitcode`` (:data:`_DIGIT_BOUND`) are never answered by shape: their facts are found line
#: by line.  Two other lines of one shape get the same level and tags and the same extraction recipe, so
#: the facts found for one line hold for every later line of its shape: a progress line seen before costs a
#: dictionary look-up.
_SHAPE = bytes.maketrans(b"123456789", b"000000000")
_DIGIT_BOUND = b"exitcode"


class Facts(NamedTuple):
    """What the per-line functions find in every line of one shape."""

    level: str
    tags: tuple[str, ...]
    recipe: extract.Recipe | None


#: The facts of a line in which nothing is found (most lines): the empty tuple, the one falsy answer, so that the
#: lines with something to do are found by one C pass (``compress``).
NOTHING: tuple[()] = ()

#: What is found in a line: its facts, or :data:`NOTHING`.
Found: TypeAlias = "Facts | tuple[()]"


class FactsMemo:
    """A bounded map from line shape to :class:`Facts`; the oldest shape goes first.

    Lines longer than ``max_shape_bytes`` are never remembered (their facts are
    found each time), so memory stays below about ``max_shapes * max_shape_bytes``.
    """

    def __init__(self, max_shapes: int = 4096, max_shape_bytes: int = 2048) -> None:
        self.max_shapes = max_shapes
        self.max_shape_bytes = max_shape_bytes
        self._facts: dict[bytes, Found] = {}

    def __len__(self) -> int:
        return len(self._facts)

    def lookup(self, shapes: list[bytes]) -> list[Found | None]:
        """The facts known for each shape, ``None`` where none are."""
        return list(map(self._facts.get, shapes))

    def remember(self, shapes: list[bytes], facts: list[Found]) -> None:
        """Remember ``facts[k]`` for ``shapes[k]``; beyond ``max_shapes`` the oldest half is forgotten (one
        rebuild now and then: deleting one entry at a time from the front of a dict is not O(1))."""
        known = self._facts
        limit = self.max_shape_bytes
        for shape, found in zip(shapes, facts, strict=True):
            if len(shape) <= limit:
                known[shape] = found
        if len(known) > self.max_shapes:
            self._facts = dict(islice(known.items(), len(known) - self.max_shapes // 2, None))


def line_facts(
    text: str,
    *,
    level: bool = True,
    tags: bool = True,
    metrics: bool = True,
    plan: Callable[[str], extract.Recipe | None] = extract.plan,
) -> Found:
    """The facts of one line (ANSI and rank prefix removed); a ``False`` flag skips a function known to find
    nothing in it (a prefilter's answer); ``plan`` finds the extraction recipe.  :data:`NOTHING` when nothing
    is found."""
    found_level = levels.detect(text) if level else ""
    found_tags = tuple(signatures.tags_of(text)) if tags else ()
    recipe = plan(text) if metrics else None
    if not found_level and not found_tags and recipe is None:
        return NOTHING
    return Facts(found_level, found_tags, recipe)


def _shapes(joined: str, lines: int) -> list[bytes]:
    """The shapes of the ``lines`` lines of ``joined`` (``"\\n"`` + lines joined by ``"\\n"``); ``[]`` when a
    line holds a newline itself (then the split does not give one piece per line)."""
    shapes = joined.encode("utf-8", "surrogatepass").translate(_SHAPE).split(b"\n")
    del shapes[0]
    return shapes if len(shapes) == lines else []


_get_line = itemgetter("line")
_get_ts = itemgetter("ts_ns")
_get_i = itemgetter("i")
_get_level = itemgetter(0)
_get_tags = itemgetter(1)
_get_recipe = itemgetter(2)


@dataclass
class LogEnricher:
    """Enriches log batches in order; holds the traceback state and the line-shape memo of one worker (bounded)."""

    grouper: TracebackGrouper = field(default_factory=TracebackGrouper)
    extractor: extract.Extractor = field(default_factory=extract.Extractor)
    memo: FactsMemo = field(default_factory=FactsMemo)

    def enrich(self, producer: str, seq: int, rank: int, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add the enrichment fields to ``records`` in place; return the metric records extracted."""
        if not records:
            return []
        texts = list(map(_get_line, records))
        joined = "\n" + "\n".join(texts)
        if "\x1b" in joined or _LINE_RANK in joined:
            texts = _strip(records, texts, joined)
            joined = "\n" + "\n".join(texts)
        shapes = _shapes(joined, len(texts))
        if shapes:
            facts = self.memo.lookup(shapes)
            unknown = list(compress(count(), map(is_, facts, repeat(None))))
        else:  # a line with a newline in it: no shapes, every line is looked at
            facts = [None] * len(texts)
            unknown = list(range(len(texts)))
        if unknown:
            self._find(texts, shapes, facts, unknown)

        metrics: list[dict[str, Any]] = []
        hits = list(compress(count(), facts))
        if hits:
            found: list[Facts] = list(map(facts.__getitem__, hits))  # type: ignore[arg-type]  # all known now
            found_levels = list(map(_get_level, found))
            for idx, level in zip(compress(hits, found_levels), filter(None, found_levels), strict=True):
                rec = records[idx]
                if not rec["level"]:
                    rec["level"] = level
            found_tags = list(map(_get_tags, found))
            for idx, tags in zip(compress(hits, found_tags), filter(None, found_tags), strict=True):
                records[idx]["tags"] = list(tags)
            recipes = list(map(_get_recipe, found))
            cooking = list(compress(hits, recipes))
            if cooking:
                ks, steps, values = extract.cook_columns(
                    list(map(texts.__getitem__, cooking)), list(filter(None, recipes))
                )
                cooked = list(map(records.__getitem__, map(cooking.__getitem__, ks)))
                metrics = [
                    {"ts_ns": ts, "step": step, "values": vals, "i": i, "source": "log"}
                    for ts, step, vals, i in zip(map(_get_ts, cooked), steps, values, map(_get_i, cooked), strict=True)
                ]
        if self.grouper.open_for(producer) or _TRACEBACK_START in joined:
            self._group(producer, seq, records, texts, joined)
        return metrics

    def _group(self, producer: str, seq: int, records: list[dict[str, Any]], texts: list[str], joined: str) -> None:
        """Set the traceback ``group`` of the lines ``texts`` of ``records`` (``joined``: ``"\\n"`` + them joined
        by ``"\\n"``), as :meth:`TracebackGrouper.group_of` answers line by line."""
        grouper = self.grouper
        group_of = grouper.group_of
        # Without rank prefixes every line is of rank -1: only that rank's traceback matters (another rank's,
        # of a rank that went silent, may stay open for good).
        ranked = any(map(contains, records, repeat("rank")))
        starts: list[int] = []
        idx, size = 0, len(texts)
        while idx < size:
            if not (grouper.open_for(producer) if ranked else grouper.is_open(producer, -1)):
                # No traceback these lines could be in is open: only a line starting one changes that, and every
                # line before it is in none.  Skip to it (a newline inside a line may stop short of it: harmless).
                if not starts:
                    starts = list(accumulate((len(t) + 1 for t in texts[:-1]), initial=1))
                at = joined.find(_LINE_TRACEBACK_START, starts[idx] - 1)
                if at < 0:
                    return
                idx = bisect_right(starts, at + 1) - 1
            rec = records[idx]
            # A producer is one process; prefixed lines are its children's (torchrun), kept apart.
            group = group_of(producer, rec.get("rank", -1) if "rank" in rec else -1, seq, rec["i"], texts[idx])
            if group:
                rec["group"] = group
            idx += 1

    def _find(self, texts: list[str], shapes: list[bytes], facts: list[Found | None], unknown: list[int]) -> None:
        """Fill ``facts[i]`` for each index in ``unknown`` (and remember them by shape): the per-line functions
        run on one line of each shape (every line holding ``exitcode``: see :data:`_DIGIT_BOUND`), those of
        them that the batch prefilters leave; the other lines of a shape get its facts."""
        if shapes:
            # The first line of each unknown shape (reversed: an earlier line overwrites a later one).
            first = dict(zip(map(shapes.__getitem__, reversed(unknown)), reversed(unknown), strict=True))
            found = sorted(first.values())
            bound = [idx for idx in found if _DIGIT_BOUND in shapes[idx]]
            if bound:
                for shape in map(shapes.__getitem__, bound):
                    del first[shape]
                found = sorted(set(found).union(idx for idx in unknown if _DIGIT_BOUND in shapes[idx]))
        else:
            found = unknown
        some = [texts[i] for i in found]
        starts = list(accumulate((len(t) + 1 for t in some[:-1]), initial=1))
        level_at, tags_at, metrics_at = (set(at) for at in _candidate_lines("\n" + "\n".join(some), some, starts))
        plan = self.extractor.plan  # its memo has a coarser shape: it knows more lines' recipes
        for idx in found:
            facts[idx] = NOTHING
        for k in sorted(level_at.union(tags_at, metrics_at)):
            facts[found[k]] = line_facts(
                some[k], level=k in level_at, tags=k in tags_at, metrics=k in metrics_at, plan=plan
            )
        if not shapes:
            return
        if len(found) < len(unknown):  # the other lines of each shape
            for idx in unknown:
                if facts[idx] is None:
                    facts[idx] = facts[first[shapes[idx]]]
        kept = list(first.values())
        self.memo.remember(list(map(shapes.__getitem__, kept)), list(map(facts.__getitem__, kept)))  # type: ignore[arg-type]


def _strip(records: list[dict[str, Any]], raw: list[str], joined: str) -> list[str]:
    """The lines ``raw`` of ``records`` (``joined``: ``"\\n"`` + them joined by ``"\\n"``) without ANSI codes
    and rank prefixes; a prefix's rank goes to the record's ``rank``.  Only the lines holding an escape or
    starting with ``[rank`` are looked at (often a few of the batch)."""
    strip = levels.strip_decorations
    texts = list(raw)
    starts = list(accumulate((len(t) + 1 for t in raw[:-1]), initial=1))
    for idx in candidates(("\x1b", _LINE_RANK), joined, starts):
        text, line_rank = strip(raw[idx])
        if line_rank is not None:
            records[idx]["rank"] = line_rank
        texts[idx] = text
    return texts
