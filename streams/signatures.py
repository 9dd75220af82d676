"""Known error signatures in log lines, as tags.

The documented set of tags (a record's ``tags`` holds those that apply):

- ``traceback``: the first line of a Python traceback (``Traceback (most recent call last):``);
- ``oom``: CUDA / PyTorch out-of-memory (``CUDA out of memory``, ``OutOfMemoryError``,
  ``CUBLAS_STATUS_ALLOC_FAILED``);
- ``cuda_error``: other CUDA failures (``CUDA error``, ``device-side assert``,
  ``CUBLAS_STATUS_*``, ``cudaError``);
- ``nccl_error``: NCCL failures (``NCCL error``, ``ncclInternalError`` and the
  other ``nccl*Error`` codes, ``NCCL WARN``, ``DistBackendError``);
- ``nccl_timeout``: the NCCL watchdog's collective timeout (``Watchdog caught
  collective operation timeout``, ``ProcessGroupNCCL`` ... ``timed out``);
- ``nan``: a NaN/Inf reported in text (``loss is nan``, ``'loss': nan``,
  ``NaN or Inf found``, ``nan loss``);
- ``segfault``: ``Segmentation fault``, ``SIGSEGV``;
- ``killed``: a process killed (``Killed`` alone on a line, ``SIGKILL``,
  ``exitcode: -9``, the kernel OOM killer).

Only the first :data:`SCAN_CHARS` characters of a line are searched (the
signatures sit at the start of the messages).  A cheap prefilter (a few
substring tests) runs first; the regular expressions only run on lines that
pass it.  Pure, never raises.
"""

from __future__ import annotations

import re

SCAN_CHARS = 2048

TAGS = ("traceback", "oom", "cuda_error", "nccl_error", "nccl_timeout", "nan", "segfault", "killed")

# A NaN/Inf in a value position (after ``:``, ``=`` or ``is``), or named as such:
#   (?:[:=]\s*['"]?|\bis\s+)[-+]?(?:nan|NaN|NAN|inf|Inf)\b|NaN or Inf|\bnan loss\b|\bNaN loss\b
# as two searches that start with a character set or a literal, which ``re`` skips to in C, and
# substring tests (the one expression tries every position of a line: tens of microseconds on a long one).
_NAN_VALUE = re.compile(r"[:=]\s*['\"]?[-+]?(?:nan|NaN|NAN|inf|Inf)\b")
_NAN_IS = re.compile(r"is\s+[-+]?(?:nan|NaN|NAN|inf|Inf)\b")  # \b before "is" checked in _nan_is
_NAN_CONTEXT = re.compile(r"loss|Loss|LOSS|grad|NaN or Inf")
_NCCL_ERR = re.compile(r"NCCL error|nccl\w*Error|NCCL WARN|DistBackendError")
_NCCL_TIMEOUT = re.compile(
    r"Watchdog caught collective operation timeout|ProcessGroupNCCL.*(?:timed out|Timeout)"
    r"|NCCL.*(?:timed out|timeout)"
)
_KILLED = re.compile(r"^Killed\s*$|SIGKILL|exitcode\s*:\s*-9\b|Out of memory: Killed process|oom-kill")


def tags_of(text: str) -> list[str]:
    """The signature tags of one log line (ANSI and rank prefix already stripped), in :data:`TAGS` order."""
    tags: list[str] = []
    text = text[:SCAN_CHARS]
    if text.startswith("Traceback (most recent call last)"):
        tags.append("traceback")
    lower_hit = "memory" in text or "MEMORY" in text
    has_cuda = "CUDA" in text or "cuda" in text or "CUBLAS" in text
    if lower_hit or has_cuda:
        if "out of memory" in text or "OutOfMemoryError" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text:
            tags.append("oom")
        elif has_cuda and (
            "CUDA error" in text or "device-side assert" in text or "CUBLAS_STATUS_" in text or "cudaError" in text
        ):
            tags.append("cuda_error")
    if "NCCL" in text or "nccl" in text or "DistBackendError" in text or "Watchdog" in text:
        if _NCCL_TIMEOUT.search(text) is not None:
            tags.append("nccl_timeout")
        elif _NCCL_ERR.search(text) is not None:
            tags.append("nccl_error")
    if (
        ("nan" in text or "NaN" in text or "inf" in text or "Inf" in text)
        and _NAN_CONTEXT.search(text) is not None
        and _has_nan(text)
    ):
        tags.append("nan")
    if "Segmentation fault" in text or "SIGSEGV" in text:
        tags.append("segfault")
    if ("Kill" in text or "KILL" in text or "-9" in text or "oom-kill" in text) and _KILLED.search(text) is not None:
        tags.append("killed")
    return tags


def _has_nan(text: str) -> bool:
    """Whether ``text`` reports a NaN/Inf value (the expression in the comment on ``_NAN_VALUE``)."""
    if _NAN_VALUE.search(text) is not None:
        return True
    if "NaN or Inf" in text or _has_word(text, "nan loss") or _has_word(text, "NaN loss"):
        return True
    return "is" in text and _nan_is(text)


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"  # what ``\w`` matches in a str pattern


def _has_word(text: str, word: str) -> bool:
    """Whether ``\bword\b`` matches in ``text`` (``word`` starts and ends with a word character)."""
    at = text.find(word)
    while at >= 0:
        end = at + len(word)
        if (at == 0 or not _is_word_char(text[at - 1])) and (end == len(text) or not _is_word_char(text[end])):
            return True
        at = text.find(word, at + 1)
    return False


def _nan_is(text: str) -> bool:
    m = _NAN_IS.search(text)
    while m is not None:
        at = m.start()
        if at == 0 or not _is_word_char(text[at - 1]):  # the \b before "is"
            return True
        m = _NAN_IS.search(text, at + 1)
    return False
