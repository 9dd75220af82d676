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

MAX_NAME_CHARS = 128
MAX_VALUES = 64
SCAN_CHARS = 4096

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|NaN|[-+]?inf|[-+]?Inf"
_DICT_PAIR = re.compile(r"'([^'\n]{1,128})': (" + _NUM + r")(?=[,}])")
_TQDM_STEP = re.compile(r"(\d+)/\d+ \[")
_ITER = re.compile(r"\biter (\d+): loss (" + _NUM + r")")
_STEP_TRAIN = re.compile(r"\bstep (\d+): train loss (" + _NUM + r")(?:, val loss (" + _NUM + r"))?")
_EQ_PAIR = re.compile(r"(?:^|(?<=[\s,|\[(]))([A-Za-z_][\w/.\-]{0,127})=(" + _NUM + r")(?=[\s,|\]/)]|$)")
_COLON_PAIR = re.compile(r"(?:^|(?<=\s))([A-Za-z_][\w/.]{0,127}):(" + _NUM + r")(?=[\s/,]|ms\b|$)")
_SPACED_PAIR = re.compile(r"(?:^|(?<=[\s|]))([A-Za-z_]\w*(?: [A-Za-z_]\w*){0,3}): (" + _NUM + r")(?=\s|\||,|$)")
_STEP_KEYS = frozenset({"step", "global_step", "iter", "iteration", "it"})


def extract(text: str) -> tuple[int, dict[str, float]] | None:
    """``(step, values)`` found in one log line (ANSI and rank prefix removed), or ``None``."""
    text = text[:SCAN_CHARS]
    has_loss = "loss" in text or "Loss" in text
    if not has_loss and "step" not in text:
        return None
    if "{'" in text and has_loss:
        start = text.rfind("{'")
        pairs = _DICT_PAIR.findall(text, start)
        if pairs:
            steps = _TQDM_STEP.findall(text, 0, start)
            if _names_loss(pairs):
                return _build(pairs, int(steps[-1]) if steps else -1)
    if "iter " in text:
        m = _ITER.search(text)
        if m is not None:
            return int(m.group(1)), {"loss": float(m.group(2))}
    if "step " in text:
        m = _STEP_TRAIN.search(text)
        if m is not None:
            values = {"train/loss": float(m.group(2))}
            if m.group(3) is not None:
                values["val/loss"] = float(m.group(3))
            return int(m.group(1)), values
    if "=" in text:
        pairs = _EQ_PAIR.findall(text)
        if _names_loss(pairs):
            return _build(pairs, -1)
    if text.startswith("step:"):
        pairs = _COLON_PAIR.findall(text)
        if len(pairs) >= 2:
            return _build(pairs, -1)
    if has_loss and ": " in text:
        pairs = _SPACED_PAIR.findall(text)
        if _names_loss(pairs):
            return _build(pairs, -1)
    return None


def _names_loss(pairs: list[tuple[str, str]]) -> bool:
    return any(k.lower().endswith("loss") for k, _ in pairs)


def _build(pairs: list[tuple[str, str]], step: int) -> tuple[int, dict[str, float]] | None:
    values: dict[str, float] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.strip().replace(" ", "_")[:MAX_NAME_CHARS]
        if name in _STEP_KEYS:
            number = float(raw_value)
            if number.is_integer() and number >= 0:
                step = int(number)
            continue
        if not name.isprintable() or len(values) >= MAX_VALUES:
            continue
        values[name] = float(raw_value)
    return (step, values) if values else None
