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

Cost per line matters (the target is 200k log lines/s per worker).  What the
per-line functions find in a line (level, tags, extraction recipe, and whether
it must be stripped or starts a traceback) depends on the raw line's *shape*
only (its digits made 0, see :data:`_SHAPE`), and real logs repeat shapes
(progress lines, per-step prints), so a bounded memo (:class:`FactsMemo`)
answers most lines with one dictionary look-up per line done in C, and the
lines in which nothing is found (most lines) cost nothing more.  Of the lines
of unknown shape, one per shape goes through the per-line functions and the
others of its batch get its facts.  The metric records of the lines of one
recipe are cooked together (:func:`streams.extract.cook_records`), and the
traceback grouper only looks at a batch when one of its lines starts a
traceback or one is open, and then only at the lines from a traceback's start
on.  The answers are always the per-line functions'
(``tests/streams/test_enrich_batch.py`` holds them equal on the real-log
corpus and on generated lines).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, compress, count, islice, repeat
from operator import contains, is_, itemgetter, setitem
from typing import Any, NamedTuple, TypeAlias

from streams import extract, levels, signatures
from streams.tracebacks import TracebackGrouper

#: Suffix of the producer id of metrics extracted from a producer's log lines.
LOG_METRICS_SUFFIX = "~log"

_TRACEBACK_START = "Traceback (most recent call last):"
_LINE_TRACEBACK_START = "\n" + _TRACEBACK_START


#: Line shapes: the UTF-8 bytes of a raw line (ANSI codes and rank prefix still in) with the ASCII digits 1-9 made
#: 0.  Stripping treats the digits alike (:data:`levels.ANSI`, :data:`levels.RANK_PREFIX`), so the stripped line's
#: shape follows from the raw line's; and every test in :mod:`streams.levels`, :mod:`streams.signatures` and
#: :mod:`streams.extract` treats the digits alike (``\\d``, ``\\w``, word boundaries, number spans) but one: the
#: literal ``-9`` of ``exitcode: -9``.  So the lines whose stripped text holds ``exitcode`` (:data:`_DIGIT_BOUND`) are
#: never answered by shape: their facts are found line by line.  Two other lines of one shape get the same level and
#: tags, the same extraction recipe and the same :data:`marks <DECORATED>`, so the facts found for one line hold for
#: every later line of its shape: a progress line seen before costs a dictionary look-up.
_SHAPE = bytes.maketrans(b"123456789", b"000000000")
_DIGIT_BOUND = "exitcode"

#: Marks of a line's facts.  The raw line holds an ANSI code or starts with ``[rank``: its text is stripped (and a
#: prefix's rank goes to the record) before it is cooked or grouped.
DECORATED = 1
#: The (stripped) line starts a traceback: the traceback grouper looks at the batch.
OPENS = 2
#: The line has tags.
TAGGED = 4


class Facts(NamedTuple):
    """What the per-line functions find in every line of one shape (in its stripped text), and its marks."""

    level: str
    tags: tuple[str, ...]
    recipe: extract.Recipe | None
    marks: int = 0


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
    text: str, *, decorated: bool = False, plan: Callable[[str], extract.Recipe | None] = extract.plan
) -> Found:
    """The facts of one line (ANSI and rank prefix removed; ``decorated``: the raw line had them); ``plan`` finds
    the extraction recipe.  :data:`NOTHING` when nothing is found and nothing is to be done."""
    found_level = levels.detect(text)
    found_tags = tuple(signatures.tags_of(text))
    recipe = plan(text)
    marks = (DECORATED if decorated else 0) | (OPENS if text.startswith(_TRACEBACK_START) else 0)
    if found_tags:
        marks |= TAGGED
    if not found_level and not marks and recipe is None:
        return NOTHING
    return Facts(found_level, found_tags, recipe, marks)


def _shapes(joined: str, lines: int) -> list[bytes]:
    """The shapes of the ``lines`` lines of ``joined`` (the lines joined by ``"\\n"``); ``[]`` when a line holds a
    newline itself (then the split does not give one piece per line)."""
    shapes = joined.encode("utf-8", "surrogatepass").translate(_SHAPE).split(b"\n")
    return shapes if len(shapes) == lines else []


def _is_decorated(line: str) -> bool:
    """Whether :func:`levels.strip_decorations` may change ``line`` (it holds an escape or starts with ``[rank``)."""
    return "\x1b" in line or line.startswith("[rank")


_get_line = itemgetter("line")
_get_level_field = itemgetter("level")
_get_ts = itemgetter("ts_ns")
_get_i = itemgetter("i")
_get_level = itemgetter(0)
_get_recipe = itemgetter(2)
_get_marks = itemgetter(3)


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
        shapes = _shapes("\n".join(texts), len(texts))
        if shapes:
            facts = self.memo.lookup(shapes)
            if None in facts:  # shapes not seen yet (or forgotten)
                self._find(texts, shapes, facts, list(compress(count(), map(is_, facts, repeat(None)))))
        else:  # a line with a newline in it: no shapes, every line is looked at
            facts = [None] * len(texts)
            self._find(texts, shapes, facts, list(range(len(texts))))

        metrics: list[dict[str, Any]] = []
        opens = False
        hits = list(compress(count(), facts))
        if hits:
            found: list[Facts] = list(filter(None, facts))  # type: ignore[arg-type]  # all known now
            if any(map(_get_marks, found)):  # a few lines (all in a torchrun console): stripped, tagged, opening
                marks = list(map(_get_marks, found))
                strip = levels.strip_decorations
                for idx, fact in zip(compress(hits, marks), compress(found, marks), strict=True):
                    mark = fact.marks
                    if mark & DECORATED:
                        text, line_rank = strip(texts[idx])
                        texts[idx] = text
                        if line_rank is not None:
                            records[idx]["rank"] = line_rank
                    if mark & TAGGED:
                        records[idx]["tags"] = list(fact.tags)
                    if mark & OPENS:
                        opens = True
            found_levels = list(map(_get_level, found))
            if any(found_levels):
                leveled = list(map(records.__getitem__, compress(hits, found_levels)))
                if any(map(_get_level_field, leveled)):  # a level the producer gave is kept
                    for rec, level in zip(leveled, filter(None, found_levels), strict=True):
                        if not rec["level"]:
                            rec["level"] = level
                else:
                    deque(map(setitem, leveled, repeat("level"), filter(None, found_levels)), maxlen=0)
            recipes = list(map(_get_recipe, found))
            cooking = list(compress(hits, recipes))
            if cooking:
                cooked = list(map(records.__getitem__, cooking))
                metrics = extract.cook_records(
                    list(map(texts.__getitem__, cooking)),
                    list(filter(None, recipes)),
                    list(map(_get_ts, cooked)),
                    list(map(_get_i, cooked)),
                )
        if opens or self.grouper.open_for(producer):
            self._group(producer, seq, records, texts, "\n" + "\n".join(texts))
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
                    starts = list(accumulate(map((1).__add__, map(len, texts[:-1])), initial=1))  # in C
                at = joined.find(_LINE_TRACEBACK_START, starts[idx] - 1)
                if at < 0:
                    return
                idx = bisect_right(starts, at + 1) - 1
            rec = records[idx]
            # A producer is one process; prefixed lines are its children's (torchrun), kept apart.
            group = group_of(producer, rec.get("rank", -1), seq, rec["i"], texts[idx])
            if group:
                rec["group"] = group
            idx += 1

    def _find(self, texts: list[str], shapes: list[bytes], facts: list[Found | None], unknown: list[int]) -> None:
        """Fill ``facts[i]`` for each index in ``unknown`` (and remember them by shape): the per-line functions
        run on one line of each shape (on every line whose stripped text holds ``exitcode``: see
        :data:`_DIGIT_BOUND`); the other lines of a shape get its facts.  ``texts`` are the raw lines."""
        if not shapes:
            deque(map(facts.__setitem__, unknown, self._look(texts, unknown)[0]), maxlen=0)
            return
        # The first line of each unknown shape (reversed: an earlier line overwrites a later one).
        first = dict(zip(map(shapes.__getitem__, reversed(unknown)), reversed(unknown), strict=True))
        kept = sorted(first.values())
        found, bound = self._look(texts, kept)
        by_shape = dict(zip(map(shapes.__getitem__, kept), found, strict=True))
        if bound:  # these shapes are never answered by shape: each of their lines is looked at
            bound_shapes = {shapes[kept[k]] for k in bound}
            for shape in bound_shapes:
                del by_shape[shape]
            again = [idx for idx in unknown if shapes[idx] in bound_shapes]
            deque(map(facts.__setitem__, again, self._look(texts, again)[0]), maxlen=0)
            unknown = [idx for idx in unknown if shapes[idx] not in bound_shapes]
        deque(map(facts.__setitem__, unknown, map(by_shape.__getitem__, map(shapes.__getitem__, unknown))), maxlen=0)
        self.memo.remember(list(by_shape), list(by_shape.values()))

    def _look(self, texts: list[str], at: list[int]) -> tuple[list[Found], list[int]]:
        """The facts of the raw lines ``texts[i]`` for ``i`` in ``at``, found by the per-line functions on their
        stripped texts, and the positions in ``at`` of the lines whose stripped text holds :data:`_DIGIT_BOUND`."""
        raw = list(map(texts.__getitem__, at))
        decorated = list(map(_is_decorated, raw))
        strip = levels.strip_decorations
        some = [strip(line)[0] if odd else line for line, odd in zip(raw, decorated, strict=True)]
        bound = [k for k, text in enumerate(some) if _DIGIT_BOUND in text]
        plan = self.extractor.plan  # its memo has a coarser shape: it knows more lines' recipes
        return [line_facts(text, decorated=odd, plan=plan) for text, odd in zip(some, decorated, strict=True)], bound
