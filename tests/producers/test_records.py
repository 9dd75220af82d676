"""Record shaping and run.log's value checks (producers.records)."""

from __future__ import annotations

import numpy as np
import pytest

from producers.records import (
    InvalidValue,
    LogLine,
    coerce_values,
    log_line,
    metric_records,
    start_record,
    to_number,
    to_wire_safe,
)
from runstream.events import VALIDATORS
from runstream.events.limits import DEFAULT_LIMITS
from runstream.wire import pack


def test_numpy_scalars_become_python_numbers() -> None:
    """numpy floats and ints convert with float(); 0-d and one-element arrays too."""
    assert to_number(np.float32(0.5)) == 0.5
    assert to_number(np.int64(3)) == 3
    assert to_number(np.array(2.5)) == 2.5
    assert to_number(np.array([7.0])) == 7.0
    assert to_number(True) == 1


@pytest.mark.parametrize("value", ["1.5", b"2", None, [1.0], np.zeros(3), object()])
def test_non_numbers_are_refused(value: object) -> None:
    """Text, containers, multi-element arrays and plain objects are not numbers."""
    with pytest.raises(InvalidValue):
        to_number(value)


def test_metric_records_make_fast_path_values_plain() -> None:
    """Values run.log's fast path lets through (bool, int and float subclasses, Fraction) leave as int/float."""
    from enum import IntEnum
    from fractions import Fraction

    class Two(IntEnum):
        TWO = 2

    class Half(float):
        pass

    (rec,) = metric_records([(1, 3, {"ok": True, "e": Two.TWO, "h": Half(0.5), "f": Fraction(1, 4), "x": 1.5})])
    assert rec == {"ts_ns": 1, "step": 3, "values": {"ok": 1, "e": 2, "h": 0.5, "f": 0.25, "x": 1.5}}
    assert all(type(v) in (int, float) for v in rec["values"].values())


def test_coerce_flattens_nested_maps_and_reports_bad_names() -> None:
    """Nested maps become a/b names; bad keys and values are left out and named."""
    clean, bad = coerce_values({"train": {"loss": 1, "acc": np.float64(0.5)}, "lr": "high", 3: 1.0})
    assert clean == {"train/loss": 1, "train/acc": 0.5}
    assert sorted(bad) == ["3", "lr"]


def test_wire_safe_turns_objects_into_plain_values() -> None:
    """Config values of any type become maps, lists, text and numbers."""

    class Cfg:
        def __init__(self) -> None:
            self.depth = 3

    out = to_wire_safe(
        {
            "path": __import__("pathlib").Path("/x"),
            "arr": np.arange(3),
            "cfg": Cfg(),
            "big": 1 << 80,
            "t": (1, 2),
        }
    )
    assert out == {
        "path": "/x",
        "arr": [0, 1, 2],
        "cfg": {"depth": 3},
        "big": float(1 << 80),
        "t": [1, 2],
    }


def test_start_record_bounds_text_and_validates() -> None:
    """A start record with a huge argv is cut to fit and passes the runs validator."""
    rec = start_record(
        project="",
        name="n",
        config={"lr": 1e-3},
        tags=["a", 1],
        host="h",
        pid=1,
        world_size=0,
        argv=["x" * 5000] * 10,
    )
    out = VALIDATORS["runs"](rec, DEFAULT_LIMITS)
    assert out["project"] == "default" and out["tags"] == ["a", "1"] and out["world_size"] == 1
    assert sum(len(a) for a in out["argv"]) <= DEFAULT_LIMITS.max_text_field_chars * 4


class TensorLike:
    """The parts of torch.Tensor that to_number relies on (.size() is a method there)."""

    def __init__(self, *values: float) -> None:
        self.values = values

    def size(self) -> tuple[int, ...]:
        return (len(self.values),) if len(self.values) != 1 else ()

    def numel(self) -> int:
        return len(self.values)

    def item(self) -> float:
        if len(self.values) != 1:
            raise RuntimeError("a Tensor with more than one element cannot be converted to Scalar")
        return self.values[0]


def test_zero_dim_tensor_converted_with_item() -> None:
    """A one-element tensor becomes its value through .item() (one device sync on a GPU)."""
    assert to_number(TensorLike(0.125)) == 0.125


def test_multi_element_tensor_refused() -> None:
    """A tensor of several elements is not a metric value."""
    with pytest.raises(InvalidValue):
        to_number(TensorLike(1.0, 2.0))


@pytest.mark.parametrize("logger", ["", "train.loop"])
def test_log_line_encodes_as_the_log_record_map(logger: str) -> None:
    """A LogLine is the same MessagePack bytes as its record map (logger left out when empty)."""
    line = LogLine(1_800_000_000_000_000_000, "epoch 1 \u2588", "logging", "INFO", logger)
    expected = {"ts_ns": line.ts_ns, "line": line.line, "stream": "logging", "level": "INFO"}
    if logger:
        expected["logger"] = logger
    assert pack([line]) == pack([expected])


def test_log_line_bounds_the_logger_name() -> None:
    """A logger name beyond the validators' text limit is cut to it; the rest is kept as given."""
    long_name = "x" * (DEFAULT_LIMITS.max_text_field_chars + 5)
    line = log_line(1, "a", "logging", "WARNING", long_name)
    assert line == LogLine(1, "a", "logging", "WARNING", long_name[: DEFAULT_LIMITS.max_text_field_chars])
