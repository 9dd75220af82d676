"""Table columns kept as pieces until one Arrow conversion per column: pure, no I/O.

A :class:`Column` holds what envelopes added to one column as pieces: Arrow
arrays made from a whole envelope's records at once, *runs* (one value ``n``
times: the envelope's run id, producer, rank, a level that every line of an
envelope shares) and Python lists (the per-record path and the small
tables).  :meth:`Column.to_arrow` turns them into one array of the table's
type; runs never become per-row Python objects (a dictionary of the distinct
values and ``numpy.repeat`` of their codes, then one ``take``).

:func:`log_columns` is the sink's hot path: a log envelope's records into
columns with a handful of C-level passes per column (``map(dict.get)``,
``list.count``, ``pyarrow.array`` with type inference as the type check)
instead of Python work per record.  It returns ``None`` at the first value
that is not exactly what the column takes, and the caller then refuses the
offending records one by one (``sinks.rows``), so both paths store the same
rows.
"""

from __future__ import annotations

from array import array as pyarray
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")
_STRING = pa.string()
_STRINGS = pa.list_(_STRING)
_NO_STRINGS = pa.list_(pa.null())
_I32 = (-(2**31), 2**31 - 1)
_U32 = (0, 2**32 - 1)
#: DateTime64(6) holds 1900-01-01 .. 2299-12-31, as nanoseconds (what records carry).
TS_NS = (-2_208_988_800_000_000_000, 2**63 - 1)
#: What ``pyarrow.array`` raises for a value its type cannot take.
_ARROW_REFUSALS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)


class Run(NamedTuple):
    """``value`` repeated ``n`` times."""

    value: Any
    n: int


Piece: TypeAlias = "list[Any] | pa.Array | Run"


def piece_len(piece: Piece) -> int:
    """Rows in one piece."""
    return piece.n if isinstance(piece, Run) else len(piece)


class Column:
    """One table column as pieces, converted to Arrow once (:meth:`to_arrow`).

    A ``dictionary`` column (a ``LowCardinality(String)`` one) made of runs
    only comes out dictionary-encoded (see :func:`runs_dictionary`).
    """

    __slots__ = ("dictionary", "pieces", "type")

    def __init__(self, type: pa.DataType, dictionary: bool = False) -> None:
        self.type = type
        self.dictionary = dictionary
        self.pieces: list[Piece] = []

    def add(self, piece: Piece) -> None:
        """Append a piece: a list of Python values, an array of this column's type, or a run."""
        last = self.pieces[-1] if self.pieces else None
        if isinstance(piece, Run):
            if isinstance(last, Run) and _same(last.value, piece.value):
                self.pieces[-1] = Run(last.value, last.n + piece.n)
            elif piece.n:
                self.pieces.append(piece)
        elif isinstance(piece, list):
            if isinstance(last, list):
                last.extend(piece)
            elif piece:
                self.pieces.append(list(piece))
        elif len(piece):
            self.pieces.append(piece)

    def append(self, value: Any) -> None:
        """Append one Python value."""
        last = self.pieces[-1] if self.pieces else None
        if isinstance(last, list):
            last.append(value)
        else:
            self.pieces.append([value])

    def clear(self) -> None:
        self.pieces.clear()

    def to_arrow(self) -> pa.Array:
        """Every piece as one array of this column's type (dictionary-encoded: see the class)."""
        pieces = self.pieces
        if not pieces:
            return pa.array([], type=self.type)
        if all(isinstance(p, Run) for p in pieces):
            if self.dictionary:
                return runs_dictionary(pieces, self.type)  # type: ignore[arg-type]
            return runs_array(pieces, self.type)  # type: ignore[arg-type]
        arrays = [self._array(p) for p in pieces]
        return arrays[0] if len(arrays) == 1 else pa.concat_arrays(arrays)

    def _array(self, piece: Piece) -> pa.Array:
        if isinstance(piece, pa.Array):
            return piece
        if isinstance(piece, Run):
            return runs_array([piece], self.type)
        return pa.array(piece, type=self.type)


def _same(a: Any, b: Any) -> bool:
    # 1 == True == 1.0 in Python; a run only continues with a value of the same type.
    return a is b or (type(a) is type(b) and a == b)


def _key(value: Any) -> Any:
    return (type(value), tuple(value) if isinstance(value, list) else value)


def _codes(runs: Iterable[Run]) -> tuple[list[Any], np.ndarray]:
    """The runs' distinct values, and each row's index into them (int32)."""
    codes: dict[Any, int] = {}
    values: list[Any] = []
    index: list[int] = []
    counts: list[int] = []
    for run in runs:
        key = _key(run.value)
        code = codes.get(key)
        if code is None:
            code = codes[key] = len(values)
            values.append(run.value)
        index.append(code)
        counts.append(run.n)
    return values, np.repeat(np.array(index, np.int32), counts)


def runs_dictionary(runs: Iterable[Run], kind: pa.DataType) -> pa.DictionaryArray:
    """The runs as one dictionary-encoded array: the distinct values of type ``kind``, int32 indices."""
    values, index = _codes(runs)
    return pa.DictionaryArray.from_arrays(pa.array(index), pa.array(values, type=kind))


def runs_array(runs: Iterable[Run], kind: pa.DataType) -> pa.Array:
    """The runs as one array: each distinct value converted once, then repeated by index."""
    values, index = _codes(runs)
    if len(values) == 1 and pa.types.is_list(kind) and not values[0]:
        # n empty lists: offsets all 0, no values (take over a list array is slow).
        return pa.ListArray.from_arrays(pa.array(np.zeros(len(index) + 1, np.int32)), pa.array([], kind.value_type))
    return pa.array(values, type=kind).take(pa.array(index))


# -- the log fast path ----------------------------------------------------

_get = dict.get


def _one_type(values: list[Any], kind: type) -> bool:
    # set(map(type, ...)) runs in C: a few ns per value.
    return set(map(type, values)) == {kind}


def _inferred(values: list[Any], *kinds: pa.DataType) -> pa.Array | None:
    """``pa.array(values)`` if pyarrow infers one of ``kinds`` (so every value had that Python type)."""
    try:
        array = pa.array(values)
    except _ARROW_REFUSALS:
        return None
    return array if array.type in kinds else None


def _strings(values: list[Any], default: str | None) -> Piece | None:
    """A text column (``None`` becomes ``default``; no default: ``None`` is refused), or None."""
    n = len(values)
    first = values[0]
    if values.count(first) == n:  # identity is compared first: cheap when one object repeats
        value = default if first is None else first
        return Run(value, n) if type(value) is str else None
    if None in values:
        if default is None:
            return None
        values = [default if v is None else v for v in values]
    return _inferred(values, _STRING)


def _int_array(values: list[Any], bounds: tuple[int, int]) -> np.ndarray | None:
    """``values`` as an int64 array if every one is a Python int within ``bounds``, else None.

    ``array('q', ...)`` converts in C and refuses floats, but takes bools (an
    int subclass): the type set refuses those first.
    """
    if set(map(type, values)) != {int}:
        return None
    try:
        array = np.frombuffer(pyarray("q", values), np.int64)
    except OverflowError:
        return None
    if not (bounds[0] <= array.min() and array.max() <= bounds[1]):
        return None
    return array


def _ints(values: list[Any], bounds: tuple[int, int], kind: pa.DataType, default: int | None) -> Piece | None:
    """An integer column within ``bounds`` as ``kind`` (``None`` becomes ``default``), or None."""
    n = len(values)
    first = values[0]
    if values.count(first) == n and (first is not None or default is not None):
        value = default if first is None else first
        # 1 == True == 1.0: equal is not enough, every value must be an int.
        ok = type(value) is int and bounds[0] <= value <= bounds[1] and (first is None or _one_type(values, int))
        return Run(value, n) if ok else None
    if None in values:
        if default is None:
            return None
        values = [default if v is None else v for v in values]
    array = _int_array(values, bounds)
    return None if array is None else pa.array(array, type=kind)


def _times(values: list[Any]) -> pa.Array | None:
    """Nanosecond ``ts_ns`` values as microsecond timestamps (floor division, as ``//``), or None."""
    array = _int_array(values, TS_NS)
    return None if array is None else pa.array(array // 1000, type=_TS)


def _tags(values: list[Any]) -> Piece | None:
    """Lists of strings (``None`` is no tags), or None."""
    n = len(values)
    first = values[0]
    if values.count(first) == n:
        value = [] if first is None else first
        ok = type(value) is list and all(type(v) is str for v in value)
        return Run(value, n) if ok else None
    if None in values:
        values = [[] if v is None else v for v in values]
    if not all(type(v) is list for v in values):
        return None
    array = _inferred(values, _STRINGS, _NO_STRINGS)
    return None if array is None else array.cast(_STRINGS)


_LOG_KEYS = frozenset(
    {"ts_ns", "stream", "level", "logger", "line", "tags", "group", "orig_bytes", "i", "rank", "node"}
)


def _fields(records: list[Any]) -> Callable[[str], list[Any]] | None:
    """``key -> [record.get(key) ...]`` for a list of dicts, or None if one is not a dict.

    When every record has the first one's keys (the usual envelope: one
    producer, one shape), a key absent from the first is absent from all and
    costs no pass, and a present one costs one ``itemgetter`` pass.
    """
    first = records[0]
    if type(first) is not dict:
        return None
    n = len(records)
    try:
        sizes = set(map(len, records))
    except TypeError:  # a record without a length (nil, a number) is no map: the per-record path refuses it
        return None
    if _LOG_KEYS.issuperset(first) and sizes == {len(first)}:
        try:
            # Same size and every one of the first's keys: the same keys (KeyError otherwise;
            # a record that is not a map raises TypeError for a string key).
            present = {key: list(map(itemgetter(key), records)) for key in first}
        except (KeyError, TypeError):
            pass
        else:
            absent = [None] * n
            return lambda key: present.get(key, absent)
    if not _one_type(records, dict):
        return None
    return lambda key: list(map(_get, records, repeat(key)))


def log_columns(records: list[Any], rank: int, node: str) -> list[Piece] | None:
    """A log envelope's records as the ``logs`` columns that vary per record, or None.

    Columns in the order ``ts, stream, level, logger, line, tags, group,
    orig_bytes, idx, rank, node``; ``rank`` and ``node`` are the envelope's,
    for records that name none.  None when any record is not exactly what its
    columns take (the per-record path then finds which).
    """
    field = _fields(records) if records else None
    if field is None:
        return None
    ts = _times(field("ts_ns"))
    if ts is None:
        return None
    columns = [
        ts,
        _strings(field("stream"), "stdout"),
        _strings(field("level"), ""),
        _strings(field("logger"), ""),
        _strings(field("line"), None),
        _tags(field("tags")),
        _strings(field("group"), ""),
        _ints(field("orig_bytes"), _U32, pa.uint32(), 0),
        _ints(field("i"), _U32, pa.uint32(), None),
        _ints(field("rank"), _I32, pa.int32(), rank),
        _strings(field("node"), node),
    ]
    return None if any(c is None for c in columns) else columns  # type: ignore[return-value]


def text_bytes(piece: Piece) -> int:
    """About how many bytes of text a piece of a string column holds."""
    if isinstance(piece, Run):
        return len(piece.value) * piece.n
    if isinstance(piece, pa.Array):
        return piece.nbytes
    return sum(map(len, piece))
