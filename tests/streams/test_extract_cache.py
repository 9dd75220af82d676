"""The shape memo of metric extraction answers exactly what extract() answers, line by line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import levels
from streams.extract import Extractor, Recipe, cook_records, extract

_TOKENS = [
    "loss",
    "Loss",
    "train_loss",
    "lm loss",
    "step",
    "iter",
    "it",
    "global_step",
    "lr",
    "v_t2m",
    "=",
    ":",
    ": ",
    " ",
    "  ",
    "'",
    "{'",
    "}",
    ", ",
    "|",
    "/",
    "[",
    "(",
    "e-",
    "e+",
    ".",
    "nan",
    "inf",
    "-",
    "ms",
    "train loss",
    "val loss",
    "iteration",
    "é",
    "\t",
]
_token = st.sampled_from(_TOKENS) | st.from_regex(r"[0-9]{1,4}", fullmatch=True)


def _same_shape(text: str, rng: random.Random) -> str:
    """``text`` with every ASCII digit replaced by a random one (the same shape)."""
    return "".join(rng.choice("0123456789") if c in "0123456789" else c for c in text)


def _agree(memo: Extractor, text: str) -> None:
    assert repr(memo(text)) == repr(extract(text)), text  # repr: NaN


@settings(max_examples=400, deadline=None)
@given(st.lists(_token, min_size=1, max_size=14), st.integers(0, 2**32))
def test_memo_equals_extract_on_lines_of_one_shape(tokens: list[str], seed: int) -> None:
    """Lines that differ only in their digits get, from one memo, what extract() gives each."""
    rng = random.Random(seed)
    text = "".join(tokens)
    memo = Extractor()
    for line in [text, _same_shape(text, rng), _same_shape(text, rng)]:
        _agree(memo, line)


def test_memo_equals_extract_on_real_logs(real_logs_dir: Path) -> None:
    """On every real log line, twice through one bounded memo (cold, then warm), the answers equal extract()'s."""
    lines = []
    for path in sorted(real_logs_dir.rglob("*")):
        if path.is_file():
            lines += [levels.strip_decorations(line)[0] for line in path.read_text(errors="replace").split("\n")]
    memo = Extractor(max_shapes=512)
    found = 0
    for _ in range(2):
        for line in lines:
            got = memo(line)
            assert repr(got) == repr(extract(line)), line[:200]
            found += got is not None
    assert found > 1000 and len(memo._recipes) <= 512


def cook_many(texts: list[str], recipes: list[Recipe]) -> list[tuple[int, dict[str, float]] | None]:
    """What :func:`streams.extract.cook` answers for each ``(texts[k], recipes[k])``, from cook_records (each
    record's ``i`` is its line's position here, its ``ts_ns`` minus a million too)."""
    out: list[tuple[int, dict[str, float]] | None] = [None] * len(texts)
    positions = list(range(len(texts)))
    records = cook_records(texts, recipes, [10**6 + k for k in positions], positions)
    assert [record["i"] for record in records] == sorted({record["i"] for record in records})  # in order, once
    for record in records:
        assert record["ts_ns"] == 10**6 + record["i"] and record["source"] == "log"
        assert list(record) == ["ts_ns", "step", "values", "i", "source"]
        out[record["i"]] = (record["step"], record["values"])
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_token, min_size=1, max_size=14), min_size=1, max_size=6), st.integers(0, 2**32))
def test_cook_records_equals_extract_on_lines_of_shared_shapes(lines: list[list[str]], seed: int) -> None:
    """Lines cooked together, several per recipe object (as the memo hands them out), get what extract() gives
    each, in their order."""
    rng = random.Random(seed)
    memo = Extractor()
    texts = [_same_shape(text, rng) for text in map("".join, lines) for _ in range(3)]
    rng.shuffle(texts)
    planned = [(text, memo.plan(text)) for text in texts]
    cooked = [(text, recipe) for text, recipe in planned if recipe is not None]
    got = cook_many([text for text, _ in cooked], [recipe for _, recipe in cooked])
    assert repr(got) == repr([extract(text) for text, _ in cooked])  # repr: NaN


def test_memo_is_bounded() -> None:
    """The memo keeps at most max_shapes shapes, dropping the oldest."""
    memo = Extractor(max_shapes=3)
    for name in ["a", "b", "c", "d", "e"]:
        memo(f"{name}_loss=1.0")
    assert len(memo._recipes) == 3


_NUMBER = st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?", fullmatch=True) | st.floats().map(repr)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NUMBER, _NUMBER), min_size=1, max_size=8))
def test_cook_records_parses_numbers_as_float_does(pairs: list[tuple[str, str]]) -> None:
    """Numbers cooked together (one JSON decode for a batch) equal float() of their text, sign of zero,
    leading zeros, rounding of long mantissas, overflow to inf and all."""
    memo = Extractor()
    texts = [f"step={step} train_loss={loss} lr=0.5" for step, loss in pairs]
    planned = [(text, memo.plan(text)) for text in texts]
    cooked = [(text, recipe) for text, recipe in planned if recipe is not None]
    got = cook_many([text for text, _ in cooked], [recipe for _, recipe in cooked])
    assert repr(got) == repr([extract(text) for text, _ in cooked])  # repr: NaN, -0.0


@pytest.mark.parametrize(
    "texts",
    [
        ["step=1 loss=-5 lr=0.5", "step=2 loss=-0 lr=0.5"],  # -0: JSON reads the integer 0
        ["step=1 loss=2e100", "step=2 loss=1e400"],  # out of a double's range: JSON refuses it
        ["step=1 loss=10", "step=2 loss=05"],  # a leading zero: JSON refuses it
    ],
)
def test_cook_records_reads_what_json_reads_otherwise_as_float_does(texts: list[str]) -> None:
    """In lines of one shape, a number JSON reads otherwise than float() (``-0``, ``1e400``, ``05``) gets
    float()'s value, and so do the other lines of its batch."""
    memo = Extractor()
    recipes = [memo.plan(text) for text in texts]
    assert len({id(recipe) for recipe in recipes}) == 1
    got = cook_many(texts, recipes)  # type: ignore[arg-type]
    assert repr(got) == repr([extract(text) for text in texts])  # repr: -0.0


@pytest.mark.parametrize("odd", ["-0", "05", "1e400", "0.5"])
def test_cook_records_of_one_family_in_several_shapes_equal_extract(odd: str) -> None:
    """Lines of several shapes with the same names (one family, cooked as one), interleaved, get what extract()
    gives each, in their order, whether or not one number is read otherwise by JSON than by float()."""
    memo = Extractor()
    texts = [
        "step=1 loss=2.5 lr=0.5",
        f"step=22 loss={odd} lr=0.25",
        "step=333 loss=7 lr=1e-3",
        "step=4 loss=3.5 lr=0.5",
    ]
    recipes = [memo.plan(text) for text in texts]
    assert len({id(recipe) for recipe in recipes}) == 3
    got = cook_many(texts, recipes)  # type: ignore[arg-type]
    assert repr(got) == repr([extract(text) for text in texts])  # repr: -0.0
