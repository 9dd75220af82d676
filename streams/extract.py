"""Metrics extracted from the log lines of known frameworks.

So that ``runstream run -- python train.py`` on a script without our SDK
still gets its loss chart.  Recognised (first match wins):

- HF Trainer dict lines ``{'loss': 1.5071, 'grad_norm': 7.7, 'learning_rate': 4e-06, 'epoch': 0.04}``
  (the last dict on the line; the step is the tqdm counter ``12/120 [`` before it when present);
- nanoGPT ``iter N: loss X`` and ``step N: train loss X, val loss Y``;
- ``key=value`` progress lines (``step=12 loss=0.31 lr=3e-4``, OLMo ``train/CrossEntropyLoss=2.3``)
  when a key names a loss (ends with ``loss``: config dumps with ``kl_loss_coef=`` are not metrics);
- ``key:value`` lines starting with ``step:`` (modded-nanogpt ``step:10/20344 train_loss:4.2``);
- ``key: value`` lines naming a loss (detectron2 ``iter: 19  total_loss: 0.41``, Megatron
  ``iteration 10/ 500000 | lm loss: 5.6E+00 |``).

A step key (``step``, ``global_step``, ``iter``, ``iteration``, ``it``) becomes the
record's step (``-1`` when none); every other numeric pair a value (NaN and ±Inf
kept).  Names are cut to :data:`MAX_NAME_CHARS`, at most :data:`MAX_VALUES`
per line; only the first :data:`SCAN_CHARS` characters are searched.  A line
with no loss/step word is never searched (the prefilter).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from itertools import chain, groupby, repeat
from operator import getitem, is_
from typing import Any

import msgspec

MAX_NAME_CHARS = 128
MAX_VALUES = 64
SCAN_CHARS = 4096

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|NaN|[-+]?inf|[-+]?Inf"
_DICT_PAIR = re.compile(r"'([^'\n]{1,128})': (" + _NUM + r")(?=[,}])")
_TQDM_STEP = re.compile(r"(\d+)/\d+ \[")
_ITER = re.compile(r"\biter (\d+): loss (" + _NUM + r")")
_STEP_TRAIN = re.compile(r"\bstep (\d+): train loss (" + _NUM + r")(?:, val loss (" + _NUM + r"))?")
# The pair patterns below consume the delimiter before a name instead of looking behind for it
# (``(?:^|(?<=[\s,]))name``): a pattern that starts with a character set lets ``re`` skip to the
# candidate positions in C, about twice as fast.  They are searched in " " + text, so a name at
# the start of the line has its delimiter too.  Same matches: a match ends with a number, never
# with a delimiter, so the delimiter a next match consumes was never part of the previous one.
_EQ_PAIR = re.compile(r"[\s,|\[(]([A-Za-z_][\w/.\-]{0,127})=(" + _NUM + r")(?=[\s,|\]/)]|$)")
_COLON_PAIR = re.compile(r"\s([A-Za-z_][\w/.]{0,127}):(" + _NUM + r")(?=[\s/,]|ms\b|$)")
_SPACED_PAIR = re.compile(r"[\s|]([A-Za-z_]\w*(?: [A-Za-z_]\w*){0,3}): (" + _NUM + r")(?=\s|\||,|$)")
_STEP_KEYS = frozenset({"step", "global_step", "iter", "iteration", "it"})


#: A recipe: where one line's numbers (and names) sit, found by the patterns above; see :func:`_recipe`.
Recipe = tuple[Any, ...]
Span = tuple[int, int]


def extract(text: str) -> tuple[int, dict[str, float]] | None:
    """``(step, values)`` found in one log line (ANSI and rank prefix removed), or ``None``."""
    text = text[:SCAN_CHARS]
    recipe = _recipe(text)
    return None if recipe is None else _cook(text, recipe)


#: ASCII digits 1-9 to 0, over the UTF-8 bytes of a line (``bytes.translate`` is a C table look-up,
#: ``str.translate`` a dict look-up per character; no byte of a multi-byte character is an ASCII digit).
_DIGITS = bytes.maketrans(b"123456789", b"000000000")


class Extractor:
    """:func:`extract` with a bounded memo of line shapes, for the lines of one worker.

    Every pattern and test above treats the ASCII digits alike, so two lines
    that differ only in which digits they hold (the same shape: digits 1-9
    made 0) match the same branch at the same positions: the recipe found for
    one is the other's too, and a shape that yielded nothing yields nothing
    again.  A progress line seen before therefore costs one ``str.translate``,
    one dict look-up and the number conversions, not the pattern searches.
    The answer is always :func:`extract`'s (``tests/streams`` holds them equal).
    """

    def __init__(self, max_shapes: int = 4096) -> None:
        self.max_shapes = max_shapes
        self._recipes: dict[bytes, Recipe | None] = {}

    def __call__(self, text: str) -> tuple[int, dict[str, float]] | None:
        recipe = self.plan(text)
        return None if recipe is None else cook(text, recipe)

    def plan(self, text: str) -> Recipe | None:
        """What :func:`plan` answers for ``text``, from the memo when a line of its shape was seen."""
        text = text[:SCAN_CHARS]
        shape = text.encode("utf-8", "surrogatepass").translate(_DIGITS)
        recipes = self._recipes
        if shape in recipes:
            return recipes[shape]
        recipe = recipes[shape] = _plan(text, _recipe(text))
        if len(recipes) > self.max_shapes:
            del recipes[next(iter(recipes))]  # the oldest shape
        return recipe


def plan(text: str) -> Recipe | None:
    """The recipe of ``text`` (its first :data:`SCAN_CHARS` characters), valid for every line of its shape
    (see :class:`Extractor`); ``None`` when it holds no metrics."""
    text = text[:SCAN_CHARS]
    return _plan(text, _recipe(text))


def cook(text: str, recipe: Recipe) -> tuple[int, dict[str, float]] | None:
    """What :func:`extract` answers for ``text``, given the :func:`plan` of a line of its shape."""
    text = text[:SCAN_CHARS]
    return _cook_fixed(text, recipe) if recipe[0] == "fixed" else _cook(text, recipe)


_cut: Callable[[str, slice], str] = getitem

#: The numbers of the ``"fixed"`` recipes of a batch are parsed by one JSON decode: msgspec's float parser
#: is correctly rounded (Eisel-Lemire with an exact fallback), like ``float``, and about ten times cheaper
#: per number than a ``float`` call.  Only numbers of a JSON shape go there (see :data:`_JSON_NUMBER`); a JSON
#: integer ``-0`` would lose its sign (see :func:`_parse_json`), and a number JSON refuses in a column of a JSON
#: shape (``05``: a leading zero; ``1e400``: out of range) sends the numbers of its batch to ``float`` instead.
_FLOATS = msgspec.json.Decoder(list[float])
_JSON_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_LEADING_ZERO = re.compile(r"-?0[0-9]")


#: The ``source`` of a metric record extracted from a log line.
SOURCE = "log"


def cook_records(
    texts: list[str], recipes: list[Recipe], stamps: list[int], indexes: list[int]
) -> list[dict[str, Any]]:
    """The metric records of the ``(texts[k], recipes[k])`` from which :func:`cook` extracts metrics, in the order
    of ``k``: ``{"ts_ns": stamps[k], "step": step, "values": values, "i": indexes[k], "source": "log"}`` where
    ``(step, values)`` is what :func:`cook` answers.

    The lines of one ``"fixed"`` recipe are cooked together: each number slice is cut from all of them in one C
    loop (``map``), the numbers of all the recipes are parsed by one JSON decode (:data:`_FLOATS`), and each
    record, its value map inside, is built by one dict display (:func:`_records`), so little Python code runs
    per line.
    """
    size = len(recipes)
    if not size:
        return []
    first = recipes[0]
    groups: list[tuple[list[int], Recipe]]
    whole = all(map(is_, recipes, repeat(first)))
    if whole:  # one recipe for all (often): the lines are the group, in order
        groups = [(list(range(size)), first)]
    else:  # grouped by identity: a memo hands out one recipe object per shape
        ids = list(map(id, recipes))
        order = sorted(range(size), key=ids.__getitem__)  # stable: each group's positions stay ascending
        groups = [(ks, recipes[ks[0]]) for ks in (list(group) for _, group in groupby(order, ids.__getitem__))]
    done: list[tuple[list[int], list[dict[str, Any]]]] = []
    # The "fixed" groups whose numbers go to _FLOATS, by family (the same names, as many step-key slices, a tqdm
    # step or none): the records of a family are built by one pass, however many shapes its lines have.
    families: dict[tuple[Any, ...], list[_Group]] = {}
    for ks, recipe in groups:
        if recipe[0] != "fixed":
            found = [(k, cooked) for k in ks if (cooked := cook(texts[k], recipe)) is not None]
            done.append(
                ([k for k, _ in found], [_record(stamps[k], step, values, indexes[k]) for k, (step, values) in found])
            )
            continue
        if not recipe[2]:
            continue  # nothing but step keys: no values, no metric (as _cook_fixed)
        # A recipe's slices lie in the first SCAN_CHARS characters (it was found there): no cut needed.
        lines = texts if whole else list(map(texts.__getitem__, ks))
        if recipe[5]:
            families.setdefault((recipe[2], len(recipe[4]), recipe[1] is None), []).append((ks, lines, recipe))
        else:
            columns = [_parse(lines, where) for where in recipe[3] + recipe[4]]
            done.append((ks, _cook_family([(ks, lines, recipe)], columns, *_at(ks, stamps, indexes, whole))))
    if families:
        # For each family, the slices of each of its groups, slice by slice: the numbers of a family's slice are
        # cut from the lines of each of its groups in turn, so that they lie together once parsed.
        wheres = {
            key: list(zip(*[recipe[3] + recipe[4] for _, _, recipe in members], strict=True))
            for key, members in families.items()
        }
        numbers: list[str] = []
        for key, members in families.items():
            for where in wheres[key]:
                for (_, lines, _), at in zip(members, where, strict=True):
                    numbers.extend(map(_cut, lines, repeat(at)))
        parsed = _parse_json(numbers)
        start = 0
        for key, members in families.items():
            ks = members[0][0] if len(members) == 1 else list(chain.from_iterable(ks for ks, _, _ in members))
            if parsed is None:  # float() of the same numbers, in the same order
                group_lines = [lines for _, lines, _ in members]
                columns = [list(chain.from_iterable(map(_parse, group_lines, where))) for where in wheres[key]]
            else:
                width, size_f = len(wheres[key]), len(ks)
                columns = [parsed[at : at + size_f] for at in range(start, start + width * size_f, size_f)]
                start += width * size_f
            done.append((ks, _cook_family(members, columns, *_at(ks, stamps, indexes, whole))))
    if not done:
        return []
    if len(done) == 1 and all(len(members) == 1 for members in families.values()):  # one group's: in order
        return done[0][1]
    # The positions are distinct: each record goes to its line's place, in C; the places without one stay None.
    placed: list[dict[str, Any] | None] = [None] * size
    for ks, records in done:
        deque(map(placed.__setitem__, ks, records), maxlen=0)
    return list(filter(None, placed))  # type: ignore[arg-type]


#: The positions of the lines of one recipe, the lines, and the recipe.
_Group = tuple[list[int], list[str], Recipe]


def _at(ks: list[int], stamps: list[int], indexes: list[int], whole: bool) -> tuple[list[int], list[int]]:
    """The ``stamps`` and ``indexes`` at the positions ``ks`` (all of them when ``whole``)."""
    if whole:
        return stamps, indexes
    return list(map(stamps.__getitem__, ks)), list(map(indexes.__getitem__, ks))


def _record(ts: int, step: int, values: dict[str, float], index: int) -> dict[str, Any]:
    return {"ts_ns": ts, "step": step, "values": values, "i": index, "source": SOURCE}


def _parse(lines: list[str], where: slice) -> list[float]:
    """``float`` of the slice ``where`` of each line."""
    return list(map(float, map(_cut, lines, repeat(where))))


def _parse_json(numbers: list[str]) -> list[float] | None:
    """``float`` of each of ``numbers`` (each of a JSON number's shape), ``None`` when one of them is not a
    number that JSON reads as ``float`` reads it (then the caller parses them with ``float``)."""
    body = f",{','.join(numbers)},"
    if ",-0," in body:
        return None
    try:
        return _FLOATS.decode(f"[{body[1:-1]}]")  # a str: ASCII here, read in place
    except msgspec.MsgspecError:  # a leading zero, a number out of range
        return None


def _records(
    names: tuple[str, ...], columns: list[list[float]], steps: list[int], stamps: list[int], indexes: list[int]
) -> list[dict[str, Any]]:
    """The metric records of lines whose values are ``columns`` (one column per name), steps ``steps``, stamps
    ``stamps`` and indexes ``indexes``.  A dict display with the names in variables is built by one opcode, less
    than half the cost of ``dict(zip(...))``; it has the same answer when a name comes twice (the first place,
    the last value)."""
    arity = len(names)
    if arity == 1:
        (a,), (xs,) = names, columns
        return [
            {"ts_ns": t, "step": s, "values": {a: x}, "i": i, "source": SOURCE}
            for t, s, x, i in zip(stamps, steps, xs, indexes, strict=True)
        ]
    if arity == 2:
        a, b = names
        return [
            {"ts_ns": t, "step": s, "values": {a: x, b: y}, "i": i, "source": SOURCE}
            for t, s, x, y, i in zip(stamps, steps, *columns, indexes, strict=True)
        ]
    if arity == 3:
        a, b, c = names
        return [
            {"ts_ns": t, "step": s, "values": {a: x, b: y, c: z}, "i": i, "source": SOURCE}
            for t, s, x, y, z, i in zip(stamps, steps, *columns, indexes, strict=True)
        ]
    if arity == 4:
        a, b, c, d = names
        return [
            {"ts_ns": t, "step": s, "values": {a: x, b: y, c: z, d: w}, "i": i, "source": SOURCE}
            for t, s, x, y, z, w, i in zip(stamps, steps, *columns, indexes, strict=True)
        ]
    return [
        {"ts_ns": t, "step": s, "values": dict(zip(names, row, strict=True)), "i": i, "source": SOURCE}
        for t, s, row, i in zip(stamps, steps, zip(*columns, strict=True), indexes, strict=True)
    ]


def _cook_family(
    members: list[_Group], columns: list[list[float]], stamps: list[int], indexes: list[int]
) -> list[dict[str, Any]]:
    """The metric records of the lines of ``members``, groups of ``"fixed"`` recipes of one family (the same names,
    as many step-key slices, a tqdm step or none), in the groups' order, given the numbers of their value slices
    then of their step-key slices (one list per slice, the lines of each group in turn) and their stamps and
    indexes."""
    _, step_slice, names, slices, _, _ = members[0][2]
    if step_slice is None:
        steps = [-1] * len(stamps)
    else:
        steps = list(chain.from_iterable(map(int, map(_cut, lines, repeat(recipe[1]))) for _, lines, recipe in members))
    for numbers in columns[len(slices) :]:  # the last whole, non-negative one wins (see _build)
        if min(numbers) >= 0 and all(map(float.is_integer, numbers)):  # the usual step counter: in C
            steps = list(map(int, numbers))
        else:
            steps = [int(n) if n.is_integer() and n >= 0 else s for n, s in zip(numbers, steps, strict=True)]
    return _records(names, columns[: len(slices)], steps, stamps, indexes)


_ASCII_DIGITS = frozenset("0123456789")


def _plan(text: str, recipe: Recipe | None) -> Recipe | None:
    """``recipe`` with what :func:`_build` decides from the names done once, when no name holds a digit
    (then every line of this shape has the same names): ``("fixed", step slice, names, their value slices,
    step-key value slices, whether the numbers have a JSON number's shape)``."""
    if recipe is None or recipe[0] != "pairs":
        return recipe
    _, step_span, spans, shift = recipe
    spaced = " " + text if shift else text
    names: list[str] = []
    slices: list[slice] = []
    step_slices: list[slice] = []
    kept: set[str] = set()
    for a, b, c, d in spans:
        raw_name = spaced[a:b]
        if not _ASCII_DIGITS.isdisjoint(raw_name):
            return recipe
        name = raw_name.strip().replace(" ", "_")[:MAX_NAME_CHARS]
        if name in _STEP_KEYS:
            step_slices.append(slice(c - shift, d - shift))
        elif not name.isprintable() or len(kept) >= MAX_VALUES:
            continue
        else:
            names.append(name)
            kept.add(name)
            slices.append(slice(c - shift, d - shift))
    step = slice(*step_span) if step_span is not None else None
    # Whether the numbers go to one JSON decode (see _FLOATS): decided on this line, the same for every line
    # of its shape but for a leading zero (``10`` here, ``05`` there: then that batch's numbers go to float).
    as_json = all(
        _JSON_NUMBER.fullmatch(number) is not None and _LEADING_ZERO.match(number) is None
        for number in map(text.__getitem__, slices + step_slices)
    )
    return ("fixed", step, tuple(names), tuple(slices), tuple(step_slices), as_json)


def _cook_fixed(text: str, plan: Recipe) -> tuple[int, dict[str, float]] | None:
    _, step_slice, names, slices, step_slices, _ = plan
    # A name twice keeps its first place and its last value, as assigning one at a time would.
    values = dict(zip(names, map(float, map(text.__getitem__, slices)), strict=True))
    if not values:
        return None
    step = int(text[step_slice]) if step_slice is not None else -1
    for where in step_slices:  # the last whole, non-negative one wins (see _build)
        number = float(text[where])
        if number.is_integer() and number >= 0:
            step = int(number)
    return step, values


def _recipe(text: str) -> Recipe | None:
    """Which form ``text`` has and the spans of its step, names and values (``None``: no metrics)."""
    has_loss = "loss" in text or "Loss" in text
    if not has_loss and "step" not in text:
        return None
    if "{'" in text and has_loss:
        start = text.rfind("{'")
        pairs = [m.span(1) + m.span(2) for m in _DICT_PAIR.finditer(text, start)]
        if pairs and _spans_name_loss(text, pairs):
            step = None
            for m in _TQDM_STEP.finditer(text, 0, start):
                step = m.span(1)
            return ("pairs", step, pairs, 0)
    if "iter " in text:
        found = _ITER.search(text)
        if found is not None:
            return ("iter", found.span(1), found.span(2))
    if "step " in text:
        found = _STEP_TRAIN.search(text)
        if found is not None:
            return ("train", found.span(1), found.span(2), found.span(3) if found.group(3) is not None else None)
    # The key=value and "key: value" forms need a name ending in "loss" right before their
    # separator: a line without "loss=" / "loss: " in any case is never searched for them.
    lowered = text.lower() if "=" in text or (has_loss and ": " in text) else ""
    spaced = " " + text  # see _EQ_PAIR: spans in it are one more than in text
    if "loss=" in lowered:
        pairs = [m.span(1) + m.span(2) for m in _EQ_PAIR.finditer(spaced)]
        if _spans_name_loss(spaced, pairs):
            return ("pairs", None, pairs, 1)
    if text.startswith("step:"):
        pairs = [m.span(1) + m.span(2) for m in _COLON_PAIR.finditer(spaced)]
        if len(pairs) >= 2:
            return ("pairs", None, pairs, 1)
    if has_loss and "loss: " in lowered:
        pairs = [m.span(1) + m.span(2) for m in _SPACED_PAIR.finditer(spaced)]
        if _spans_name_loss(spaced, pairs):
            return ("pairs", None, pairs, 1)
    return None


def _spans_name_loss(text: str, pairs: list[tuple[int, int, int, int]]) -> bool:
    return any(text[a:b].lower().endswith("loss") for a, b, _, _ in pairs)


def _cook(text: str, recipe: Recipe) -> tuple[int, dict[str, float]] | None:
    """The ``(step, values)`` that ``recipe`` (from :func:`_recipe` on a line of this shape) finds in ``text``."""
    form = recipe[0]
    if form == "pairs":
        _, step_span, spans, shift = recipe
        if shift:
            text = " " + text
        pairs = [(text[a:b], text[c:d]) for a, b, c, d in spans]
        return _build(pairs, int(text[step_span[0] : step_span[1]]) if step_span is not None else -1)
    if form == "iter":
        (a, b), (c, d) = recipe[1], recipe[2]
        return int(text[a:b]), {"loss": float(text[c:d])}
    (a, b), (c, d), val = recipe[1], recipe[2], recipe[3]
    values = {"train/loss": float(text[c:d])}
    if val is not None:
        values["val/loss"] = float(text[val[0] : val[1]])
    return int(text[a:b]), values


def _build(pairs: list[tuple[str, str]], step: int) -> tuple[int, dict[str, float]] | None:
    if len(pairs) <= MAX_VALUES:
        quick = _build_plain(pairs, step)
        if quick is not None:
            return quick if quick[1] else None
    values: dict[str, float] = {}
    for raw_name, raw_value in pairs:
        # A printable name without a space has no whitespace at all: nothing to strip or replace.
        if " " in raw_name or not raw_name.isprintable():
            name = raw_name.strip().replace(" ", "_")[:MAX_NAME_CHARS]
            if name not in _STEP_KEYS and not name.isprintable():
                continue
        else:
            name = raw_name[:MAX_NAME_CHARS]
        if name in _STEP_KEYS:
            number = float(raw_value)
            if number.is_integer() and number >= 0:
                step = int(number)
            continue
        if len(values) >= MAX_VALUES:
            continue
        values[name] = float(raw_value)
    return (step, values) if values else None


def _build_plain(pairs: list[tuple[str, str]], step: int) -> tuple[int, dict[str, float]] | None:
    """What :func:`_build` answers (with ``{}`` for its ``None``) for the usual pairs, converted in C loops:
    printable names without spaces, none too long, none twice, at most one step key; else ``None``."""
    names = [name for name, _ in pairs]
    flat = "".join(names)
    if " " in flat or not flat.isprintable() or max(map(len, names)) > MAX_NAME_CHARS:
        return None
    values = dict(zip(names, map(float, [value for _, value in pairs]), strict=True))
    if len(values) != len(pairs):  # a name twice: which value wins depends on the order
        return None
    keys = _STEP_KEYS.intersection(values)
    if keys:
        if len(keys) > 1:
            return None
        number = values.pop(next(iter(keys)))
        if number.is_integer() and number >= 0:
            step = int(number)
    return step, values
