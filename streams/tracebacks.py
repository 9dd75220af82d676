"""Grouping of multi-line Python tracebacks, per producer and rank, across batches.

A traceback starts at ``Traceback (most recent call last):`` and goes on
through its indented frame lines, the ``^^^^`` markers and the exception line
(``RuntimeError: ...``); a chained exception (``During handling of the above
exception, another exception occurred:`` / ``The above exception was the
direct cause of the following exception:``, blank lines around them) stays in
the same group.  Lines of different ranks interleave in one console when
torchrun prefixes them with ``[rankN]:``, so the state is kept per
``(producer, rank)``.

The group id is ``"{producer}/{seq}/{i}"`` of the traceback's first line: a
replay of the same batches yields the same ids.  Memory is bounded: at most
:attr:`TracebackGrouper.max_keys` open states (least recently used dropped)
and at most :attr:`TracebackGrouper.max_group_lines` lines per group, after
which the group is closed.  The state lives in the worker's memory: a
traceback cut by a worker restart or a partition moving to another worker is
split in two groups (documented; every line still carries its text).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

_START = "Traceback (most recent call last):"
_CHAIN = ("During handling of the above exception", "The above exception was the direct cause")

# Phases of an open group.
_FRAMES = 1  # inside the frames: indented lines belong
_AFTER = 2  # after the exception line: a chain phrase or blank line may follow
_CHAINED = 3  # a chain phrase was seen: the next Traceback continues the group


@dataclass
class _Open:
    group: str
    phase: int
    lines: int = 1


@dataclass
class TracebackGrouper:
    """Assigns a group id to each line of a traceback; one instance per worker."""

    max_keys: int = 10_000
    max_group_lines: int = 2_000
    _open: OrderedDict[tuple[str, int], _Open] = field(default_factory=OrderedDict)
    #: producer -> how many of its (producer, rank) keys are open
    _producers: Counter[str] = field(default_factory=Counter)

    def group_of(self, producer: str, rank: int, seq: int, index: int, text: str) -> str:
        """The group id of ``text`` (a line with ANSI and rank prefix removed), or ``""`` outside a traceback."""
        key = (producer, rank)
        state = self._open.get(key)
        if state is None:
            if text.startswith(_START):
                self._remember(key, _Open(f"{producer}/{seq}/{index}", _FRAMES))
                return f"{producer}/{seq}/{index}"
            return ""
        self._open.move_to_end(key)
        state.lines += 1
        if state.lines > self.max_group_lines:
            self._close(key)
            return ""
        if text.startswith(_START):
            if state.phase != _CHAINED:  # a new traceback, not a chained one: a new group
                state.group, state.lines = f"{producer}/{seq}/{index}", 1
            state.phase = _FRAMES
            return state.group
        if state.phase == _FRAMES:
            if not text or text[0] in " \t^~" or _is_blank(text):
                return state.group
            state.phase = _AFTER  # the exception line
            return state.group
        if _is_blank(text):
            return state.group if state.phase == _CHAINED else ""
        if text.startswith(_CHAIN):
            state.phase = _CHAINED
            return state.group
        if state.phase == _AFTER and text[0] in " \t":
            return state.group  # a multi-line exception message, indented
        self._close(key)
        return ""

    def _remember(self, key: tuple[str, int], state: _Open) -> None:
        self._open[key] = state
        self._producers[key[0]] += 1
        if len(self._open) > self.max_keys:
            self._drop(self._open.popitem(last=False)[0])

    def _close(self, key: tuple[str, int]) -> None:
        del self._open[key]
        self._drop(key)

    def _drop(self, key: tuple[str, int]) -> None:
        left = self._producers[key[0]] - 1
        if left:
            self._producers[key[0]] = left
        else:
            del self._producers[key[0]]

    def open_groups(self) -> int:
        """How many tracebacks are open now (bounded by ``max_keys``)."""
        return len(self._open)

    def open_for(self, producer: str) -> bool:
        """Whether a traceback of ``producer`` (any rank) is open now."""
        return producer in self._producers

    def is_open(self, producer: str, rank: int) -> bool:
        """Whether a traceback of ``producer`` at ``rank`` is open now: when not, :meth:`group_of` answers
        ``""`` and changes nothing for a line of that key that does not start a traceback."""
        return (producer, rank) in self._open


def _is_blank(text: str) -> bool:
    return not text.strip()
