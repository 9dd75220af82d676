"""Level detection for console lines whose producer left the level empty.

Recognised, in the first :data:`HEAD_CHARS` characters of a line (after ANSI
colour codes and a torchrun ``[rankN]:`` prefix are removed):

- Python ``logging`` defaults (``WARNING:torch.distributed.run:...``) and any
  format that sets the level off as a token: DeepSpeed ``[INFO]``, transformers
  ``[INFO|file.py:12]``, Lightning/rich ``] INFO   msg``, detectron2
  ``d2.engine INFO:``, mmengine ``- mmengine - INFO -``, OLMo's tab-separated
  ``\\tINFO\\t``, vLLM ``INFO 04-03 ...``, NCCL ``NCCL INFO`` / ``NCCL WARN``;
- glog / c10 prefixes as torchrun and PyTorch print them (``W1212 16:13:33.676``,
  ``[W102 15:45:34.86 ProcessGroupNCCL.cpp:4115]``): ``I``/``W``/``E``/``F``;
- Python tracebacks and exceptions (``Traceback (most recent call last):``,
  ``RuntimeError: ...``) as ``ERROR``; ``warnings`` output
  (``file.py:12: FutureWarning: ...``) as ``WARNING``;
- CUDA/NCCL failures (``CUDA error:``, ``NCCL error``) as ``ERROR``.

The first token found wins; a line with none stays ``""`` (unknown), never
guessed.  Pure and cheap: one bounded regex search per line.
"""

from __future__ import annotations

import re

#: Only the head of a line is searched: levels sit at the start of log formats.
HEAD_CHARS = 160

_CANONICAL = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
    "FATAL": "CRITICAL",
}
_GLOG = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
RANK_PREFIX = re.compile(r"\[rank(\d{1,6})\]:[ ]?")

# Literal alternations are fast in ``re`` (no per-position branching), so the
# word is found first and its boundaries are checked by hand.
_WORD = re.compile(r"WARNING|WARN|INFO|ERROR|DEBUG|CRITICAL|FATAL")
_BEFORE = frozenset(" \t[|:(-")
_AFTER = frozenset(" \t]|:)-")
_GLOG_RE = re.compile(r"\[?([IWEF])\d{3,4} \d\d:\d\d:\d\d")
_EXCEPTION = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt)(?::|$)")
_WARNING = re.compile(r"\S+:\d+: [A-Z]\w*Warning:")


def _any_word(head: str) -> bool:
    # Plain substring tests are several times cheaper than the regex search.
    return (
        "INFO" in head or "WARN" in head or "ERROR" in head or "DEBUG" in head or "CRITICAL" in head or "FATAL" in head
    )


def strip_decorations(line: str) -> tuple[str, int | None]:
    """``line`` without ANSI colour codes and a leading ``[rankN]:`` prefix, and that rank."""
    if "\x1b" in line:
        line = ANSI.sub("", line)
    rank = None
    if line.startswith("[rank"):
        m = RANK_PREFIX.match(line)
        if m is not None:
            rank = int(m.group(1))
            line = line[m.end() :]
    return line, rank


def detect(text: str) -> str:
    """The level named in ``text`` (already stripped), canonical, or ``""`` when none is recognisable."""
    head = text[:HEAD_CHARS]
    if not head:
        return ""
    first = head[0]
    if first in "IWEF[" and _GLOG_RE.match(head) is not None:
        return _GLOG[head[1] if first == "[" else first]
    if first == "T" and head.startswith("Traceback (most recent call last):"):
        return "ERROR"
    m = _WORD.search(head) if _any_word(head) else None
    while m is not None:
        start, end = m.span()
        if (start == 0 or head[start - 1] in _BEFORE) and (end == len(head) or head[end] in _AFTER):
            return _CANONICAL[m.group()]
        m = _WORD.search(head, end)
    if ("Error" in head or "Exception" in head or "Interrupt" in head) and _EXCEPTION.match(head) is not None:
        return "ERROR"
    if "Warning:" in head and _WARNING.match(head) is not None:
        return "WARNING"
    if "CUDA error" in head or "NCCL error" in head:
        return "ERROR"
    return ""


def detect_level(line: str) -> str:
    """The level of a raw console ``line`` (ANSI and rank prefix allowed), or ``""``."""
    return detect(strip_decorations(line)[0])
