"""Evaluation results as ``evals`` records (numpy only): the ``data`` shapes the UI draws.

Each function checks its input, raises ``ValueError`` saying what is wrong
(these are explicit calls, not the training hot path), and returns the
``data`` map of one record; :class:`producers.run.Run` wraps it as
``{"ts_ns", "name", "type", "data"}``.  Every number in ``data`` is a plain
``int`` or ``float``; labels and column names are text.

``confusion_matrix`` (``Run.log_confusion_matrix(y_true, y_pred, labels)``)::

    {"labels": [str, ...],                  # n labels, in the order given
     "matrix": [[int, ...], ...],           # n x n; matrix[i][j] = samples of true
                                            # labels[i] predicted as labels[j]
     "total": int,                          # samples counted
     "per_label": {"precision": [float], "recall": [float], "f1": [float],
                   "support": [int]},       # per label, one-vs-rest; 0.0 where undefined
     "accuracy": float}

``pr_curve`` (``Run.log_pr_curve(y_true, y_score, labels, thresholds=101)``)::

    {"labels": [str, ...],                  # the labels that have a curve
     "thresholds": [float, ...],            # ascending; a sample is predicted positive
                                            # for a label when its score >= threshold
     "curves": [{"label": str,
                 "precision": [float], "recall": [float], "f1": [float],
                 "support": int,            # samples whose true label is this one
                 "average_precision": float}, ...]}   # aligned with "labels"

    ``y_score`` is (n, n_labels), one column per label (one-vs-rest), or
    (n,) for two labels: the score of ``labels[1]``, which alone then has a
    curve.  With no sample predicted positive, precision is 1.0 (the curve's
    end, as scikit-learn draws it); with no positive sample, recall is 0.0.
    ``average_precision`` is the step-wise area sum((R[k] - R[k+1]) * P[k])
    over the thresholds given.

``table`` (``Run.log_table(name, columns, rows)``)::

    {"columns": [str, ...], "rows": [[cell, ...], ...]}   # each row as long as columns

``row`` (``Run.log_row(name, **values)``; rows of one name form a table over time)::

    {"values": {column: cell, ...}}

``list`` (``Run.log_list(name, values)``)::

    {"values": [number, ...]}

A cell is a number, text, bool or null.  Labels are given as ``labels``;
``y_true``/``y_pred`` hold label values, or integer positions into
``labels`` when ``labels`` has no integers (``labels=["cat", "dog"]`` with
``y_pred=[0, 1, 1]``).

Limits (each refused with ``ValueError``): at most :data:`MAX_LABELS` labels
(confusion matrix) / :data:`MAX_CURVE_POINTS` label x threshold points
(PR curve, thresholds <= :data:`MAX_THRESHOLDS`), :data:`MAX_SAMPLES`
samples, :data:`MAX_TABLE_CELLS` table cells in at most
:data:`MAX_COLUMNS` columns, :data:`MAX_LIST_VALUES` list values, text up to
:data:`MAX_TEXT_CHARS` characters, and :data:`MAX_DATA_BYTES` encoded bytes
per record (an envelope must stay under Kafka's ~1 MB message limit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runstream.events.limits import DEFAULT_LIMITS
from runstream.wire import pack

MAX_LABELS = 200
MAX_THRESHOLDS = 1001
MAX_CURVE_POINTS = 20_000
MAX_SAMPLES = 50_000_000
MAX_COLUMNS = 200
MAX_TABLE_CELLS = 100_000
MAX_LIST_VALUES = 100_000
MAX_TEXT_CHARS = DEFAULT_LIMITS.max_text_field_chars
MAX_DATA_BYTES = 512 * 1024


def check_name(name: Any) -> str:
    """``name`` if it is usable as an evals record name; raises ``ValueError``."""
    most = DEFAULT_LIMITS.max_metric_name_chars
    if not isinstance(name, str) or not name or len(name) > most:
        raise ValueError(f"name must be a non-empty string of at most {most} characters")
    if not name.isprintable():
        raise ValueError("name must not contain control characters")
    return name


def confusion_matrix(y_true: Any, y_pred: Any, labels: Sequence[Any]) -> dict[str, Any]:
    """The ``confusion_matrix`` data for predictions ``y_pred`` of ``y_true``; raises ``ValueError``."""
    names, index = _labels(labels, MAX_LABELS)
    t = _encode(y_true, labels, index, "y_true")
    p = _encode(y_pred, labels, index, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length ({t.size} and {p.size})")
    n = len(names)
    matrix = np.bincount(t * n + p, minlength=n * n).reshape(n, n)
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support.astype(np.float64))
    return _bounded(
        {
            "labels": names,
            "matrix": matrix.tolist(),
            "total": int(t.size),
            "per_label": {
                "precision": precision.tolist(),
                "recall": recall.tolist(),
                "f1": _f1(precision, recall).tolist(),
                "support": support.tolist(),
            },
            "accuracy": float(tp.sum() / t.size) if t.size else 0.0,
        }
    )


def pr_curve(y_true: Any, y_score: Any, labels: Sequence[Any], thresholds: Any = 101) -> dict[str, Any]:
    """The ``pr_curve`` data (per label, one-vs-rest); raises ``ValueError``."""
    names, index = _labels(labels, MAX_LABELS)
    t = _encode(y_true, labels, index, "y_true")
    scores = _scores(y_score, t.size, len(names))
    thr = _thresholds(thresholds)
    if scores.ndim == 1:
        columns = [(1, scores)]
    else:
        columns = [(k, scores[:, k]) for k in range(len(names))]
    if len(columns) * thr.size > MAX_CURVE_POINTS:
        raise ValueError(f"labels x thresholds must be at most {MAX_CURVE_POINTS} (got {len(columns) * thr.size})")
    curves = []
    for k, col in columns:
        positive = t == k
        pos = np.sort(col[positive])
        neg = np.sort(col[~positive])
        # Samples with score >= threshold, by binary search on the sorted scores.
        tp = (pos.size - np.searchsorted(pos, thr, side="left")).astype(np.float64)
        fp = (neg.size - np.searchsorted(neg, thr, side="left")).astype(np.float64)
        predicted = tp + fp
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1.0), 1.0)
        recall = tp / pos.size if pos.size else np.zeros_like(tp)
        ap = float(np.sum((recall - np.append(recall[1:], 0.0)) * precision))
        curves.append(
            {
                "label": names[k],
                "precision": precision.tolist(),
                "recall": recall.tolist(),
                "f1": _f1(precision, recall).tolist(),
                "support": int(pos.size),
                "average_precision": ap,
            }
        )
    return _bounded({"labels": [c["label"] for c in curves], "thresholds": thr.tolist(), "curves": curves})


def table(columns: Sequence[Any], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The ``table`` data; raises ``ValueError`` for ragged rows, odd cells or size."""
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Sequence) or not columns:
        raise ValueError("columns must be a non-empty list of column names")
    if len(columns) > MAX_COLUMNS:
        raise ValueError(f"at most {MAX_COLUMNS} columns (got {len(columns)})")
    cols = [_text(c, "column name") for c in columns]
    if len(set(cols)) != len(cols):
        raise ValueError("column names must be distinct")
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise ValueError("rows must be a list of rows")
    if len(rows) * len(cols) > MAX_TABLE_CELLS:
        raise ValueError(f"at most {MAX_TABLE_CELLS} cells (got {len(rows)} rows x {len(cols)} columns)")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or len(row) != len(cols):
            raise ValueError(f"row {i} must be a list of {len(cols)} cells")
        out.append([_cell(v, f"row {i} column {cols[j]!r}") for j, v in enumerate(row)])
    return _bounded({"columns": cols, "rows": out})


def row(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``row`` data; raises ``ValueError`` for no values, odd cells or size."""
    if not values:
        raise ValueError("log_row needs at least one column=value")
    if len(values) > MAX_COLUMNS:
        raise ValueError(f"at most {MAX_COLUMNS} columns (got {len(values)})")
    return _bounded({"values": {_text(k, "column name"): _cell(v, f"column {k!r}") for k, v in values.items()}})


def list_values(values: Any) -> dict[str, Any]:
    """The ``list`` data (numbers, NaN/Inf kept); raises ``ValueError`` for non-numbers or size."""
    if isinstance(values, (str, bytes, Mapping)):
        raise ValueError("values must be a list of numbers")
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"values must be a list of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"values must be one-dimensional (got shape {arr.shape})")
    if arr.size > MAX_LIST_VALUES:
        raise ValueError(f"at most {MAX_LIST_VALUES} values (got {arr.size})")
    if arr.size and (arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"values must be numbers, not {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError("values must be real numbers")
    out = [_plain_number(v) for v in arr.tolist()]
    return _bounded({"values": out})


# ------------------------------------------------------------------ helpers


def _labels(labels: Any, max_labels: int) -> tuple[list[str], dict[Any, int]]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) and not hasattr(labels, "tolist"):
        raise ValueError("labels must be a list of labels")
    items = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    if len(items) < 2:
        raise ValueError("labels must name at least two classes")
    if len(items) > max_labels:
        raise ValueError(f"at most {max_labels} labels (got {len(items)})")
    index: dict[Any, int] = {}
    for i, label in enumerate(items):
        if label in index:
            raise ValueError(f"label {label!r} appears twice")
        index[label] = i
    names = [_text(str(label), "label") for label in items]
    if len(set(names)) != len(names):
        raise ValueError("labels must be distinct as text")
    return names, index


def _encode(y: Any, labels: Sequence[Any], index: dict[Any, int], what: str) -> np.ndarray:
    """``y`` as label positions (int64); raises ``ValueError`` for an unknown label."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a list of labels: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional (got shape {arr.shape})")
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    if arr.size > MAX_SAMPLES:
        raise ValueError(f"at most {MAX_SAMPLES} samples (got {arr.size})")
    labels_have_ints = any(isinstance(k, int) and not isinstance(k, bool) for k in index)
    if np.issubdtype(arr.dtype, np.integer) and not labels_have_ints:
        # Positions into labels.
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= len(index):
            bad = lo if lo < 0 else hi
            raise ValueError(f"{what} holds position {bad}, outside 0..{len(index) - 1} of labels")
        return arr.astype(np.int64)
    uniq, inverse = np.unique(arr, return_inverse=True)
    try:
        pos = np.array([index[u] for u in uniq.tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"{what} holds {exc.args[0]!r}, which is not in labels") from None
    except TypeError:
        raise ValueError(f"{what} holds values that cannot be labels") from None
    return pos[inverse.reshape(-1)]


def _scores(y_score: Any, n: int, n_labels: int) -> np.ndarray:
    try:
        s = np.asarray(y_score, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y_score must be numbers: {exc}") from None
    if s.ndim == 1:
        if n_labels != 2:
            raise ValueError(f"a one-dimensional y_score needs exactly two labels (got {n_labels})")
    elif s.ndim != 2 or s.shape[1] != n_labels:
        raise ValueError(f"y_score must have shape ({n}, {n_labels}) or ({n},) for two labels (got {s.shape})")
    if s.shape[0] != n:
        raise ValueError(f"y_score has {s.shape[0]} rows for {n} samples")
    if not np.isfinite(s).all():
        raise ValueError("y_score must be finite (no NaN or Inf)")
    return s


def _thresholds(thresholds: Any) -> np.ndarray:
    if isinstance(thresholds, (int, np.integer)) and not isinstance(thresholds, bool):
        if not 2 <= thresholds <= MAX_THRESHOLDS:
            raise ValueError(f"thresholds must be between 2 and {MAX_THRESHOLDS} (got {thresholds})")
        return np.linspace(0.0, 1.0, int(thresholds))
    try:
        thr = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"thresholds must be a count or a list of numbers: {exc}") from None
    if thr.ndim != 1 or not 1 <= thr.size <= MAX_THRESHOLDS:
        raise ValueError(f"thresholds must be a list of 1 to {MAX_THRESHOLDS} numbers")
    if not np.isfinite(thr).all():
        raise ValueError("thresholds must be finite")
    return np.unique(thr)  # ascending, distinct


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    s = precision + recall
    return np.where(s > 0, 2 * precision * recall / np.where(s > 0, s, 1.0), 0.0)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, not {type(value).__name__}")
    if not value or len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{what} must be 1 to {MAX_TEXT_CHARS} characters")
    return value


def _plain_number(v: Any) -> float | int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v if -(1 << 63) <= v < (1 << 63) else float(v)
    return float(v)


def _cell(value: Any, what: str) -> float | int | str | bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"{what}: text longer than {MAX_TEXT_CHARS} characters")
        return value
    if isinstance(value, (int, float)):
        return _plain_number(value)
    item = getattr(value, "item", None)  # numpy scalars, one-element arrays and tensors
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return _cell(item(), what)
    raise ValueError(f"{what}: a {type(value).__name__} is not a number, text, bool or None")


def _bounded(data: dict[str, Any]) -> dict[str, Any]:
    size = len(pack(data))
    if size > MAX_DATA_BYTES:
        raise ValueError(f"the result is {size} bytes encoded, more than {MAX_DATA_BYTES}")
    return data


__all__ = [
    "MAX_COLUMNS",
    "MAX_DATA_BYTES",
    "MAX_LABELS",
    "MAX_LIST_VALUES",
    "MAX_SAMPLES",
    "MAX_TABLE_CELLS",
    "MAX_TEXT_CHARS",
    "MAX_THRESHOLDS",
    "check_name",
    "confusion_matrix",
    "list_values",
    "pr_curve",
    "row",
    "table",
]
