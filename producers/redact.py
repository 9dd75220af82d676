"""Secret redaction: credentials in log lines and run metadata never leave the host.

:func:`redact_text` replaces every span that looks like a credential with
``[REDACTED:<kind>]`` and says how many it replaced.  It runs on the
background sender (where envelopes are built, :mod:`producers.batch`), never
on the training thread, and a line is first checked by :func:`candidate`, a
handful of substring tests on its lower-cased copy: a line with none of the
trigger words costs that check and nothing else.

Forms recognised (``kind`` in brackets):

* provider tokens by their shape: Hugging Face ``hf_…`` (``hf_token``), AWS
  access key ids ``AKIA…``/``ASIA…`` (``aws_access_key_id``) and
  ``aws_secret_access_key=…`` (``aws_secret_access_key``), GitHub ``ghp_``,
  ``gho_``, ``ghs_``, ``ghu_``, ``ghr_``, ``github_pat_`` (``github_token``),
  OpenAI ``sk-…``/``sk-proj-…`` (``openai_key``), W&B keys after
  ``WANDB_API_KEY=`` or ``wandb login`` (``wandb_key``), Slack ``xox?-``
  tokens and webhooks (``slack_token``), JWTs ``eyJ….eyJ….…`` (``jwt``);
* ``Authorization: Bearer|Basic|token …`` headers and bare ``Bearer …``
  (``auth_header``); the password of ``scheme://user:pass@host``, keeping
  user and host (``url_password``); PEM private-key blocks, whole when they
  sit in one record (``private_key``);
* ``key=value`` / ``key: value`` (quoted or not, JSON and dict reprs
  included) where the key names a secret — ``password``, ``secret``,
  ``api_key``, ``access_key``, ``client_secret``, ``access_token``,
  ``hf_token`` … (``password``, ``secret``, ``token``).  Keys that only
  mention tokens the way training logs do (``max_tokens``, ``use_cls_token``,
  ``pad_token``, ``token_type_ids``, ``tokenizer``) and values that are no
  secret (numbers, booleans, ``None``, ``${VAR}`` references, short
  ``<pad>``-like tokens) are left alone.

Not recognised: a secret split across two records (a PEM block printed line
by line is redacted only from its ``BEGIN`` line when that line carries key
material), and free-form secrets with no key, prefix or header around them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Keywords of ``key=value`` secrets (lower case), found in the key.
KEY_WORDS: tuple[str, ...] = ("pass", "secret", "key", "token", "credential")


def _marker(kind: str) -> str:
    return f"[REDACTED:{kind}]"


# Provider shapes: (kind, lower-case triggers (one must be in the line), pattern,
# group kept before the marker or 0 for none).  A shape's pattern only runs on a
# line holding one of its triggers, so a line pays for the shapes it may contain.
_SHAPES: list[tuple[str, tuple[str, ...], re.Pattern[str], int]] = [
    (
        "private_key",
        ("private key",),
        re.compile(
            r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.S
        ),
        0,
    ),
    ("jwt", ("eyj",), re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), 0),
    ("hf_token", ("hf_",), re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}(?![A-Za-z0-9])"), 0),
    (
        "aws_access_key_id",
        ("akia", "asia"),
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        0,
    ),
    (
        "aws_secret_access_key",
        ("aws_secret_access_key",),
        re.compile(
            r"(?i)(aws_secret_access_key[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
        ),
        1,
    ),
    (
        "github_token",
        ("ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"),
        re.compile(
            r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{30,})(?![A-Za-z0-9])"
        ),
        0,
    ),
    (
        "openai_key",
        ("sk-",),
        re.compile(r"(?<![\w-])sk-(?=[A-Za-z0-9_-]*\d)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        0,
    ),
    (
        "wandb_key",
        ("wandb",),
        re.compile(
            r"(?i)(WANDB_API_KEY[\"']?\s*[=:]\s*[\"']?|wandb\s+login(?:\s+--?[\w-]+(?:=\S+)?)*\s+)"
            r"[0-9a-f]{40}(?![0-9a-zA-Z])"
        ),
        1,
    ),
    (
        "slack_token",
        ("xox", "xapp-", "hooks.slack"),
        re.compile(
            r"(?<![\w-])(?:xox[abposre]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{10,}"
            r"|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+)"
        ),
        0,
    ),
    (
        "auth_header",
        ("authorization",),
        re.compile(
            r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token|digest)\s+)"
            r"[^\s\"',;]+"
        ),
        1,
    ),
    ("auth_header", ("bearer",), re.compile(r"(?i)(\bbearer\s+)(?!\[REDACTED)[A-Za-z0-9._~+/=-]{16,}"), 1),
    (
        "url_password",
        ("@",),
        re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/@?#\[\]]*:)(?!\[REDACTED)[^\s@/?#]+(?=@)"),
        1,
    ),
]

#: Every trigger, for the prefilter: a line holding none of them holds no secret we recognise.
TRIGGERS: tuple[str, ...] = tuple(
    dict.fromkeys(t for _, triggers, _, _ in _SHAPES for t in triggers if t != "private key")
) + KEY_WORDS


def candidate(text: str) -> bool:
    """Whether ``text`` may hold a secret (false means :func:`redact_text` would change nothing).

    True whenever ``text`` holds one of :data:`TRIGGERS` (case-insensitively).
    Written out as one expression, rarer needles nested behind a common
    bigram, because each Python-level loop step costs as much as a search.
    """
    low = text.lower()
    return (
        "key" in low
        or "token" in low
        or "pass" in low
        or "secret" in low
        or "credential" in low
        or "auth" in low
        or "bearer" in low
        or "wandb" in low
        or "@" in low
        or "hf_" in low
        or "sk-" in low
        or "eyj" in low
        or "xox" in low
        or "xapp-" in low
        or "slack" in low
        or ("ia" in low and ("akia" in low or "asia" in low))
        or (
            "gh" in low
            and (
                "ghp_" in low
                or "gho_" in low
                or "ghs_" in low
                or "ghu_" in low
                or "ghr_" in low
            )
        )
        or "github_pat_" in low
    )


#: How a key naming a secret ends (lower case; camelCase keys end the same way).
_KEY_ENDINGS = ("password", "passwd", "passphrase", "secret", "secrets", "credential", "credentials", "key", "token",
                "keyid", "key_id", "key-id", "key.id")
_KEY_CHAR = re.compile(r"[\w.-]*")
_KEY_CHARS_BACK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_SEP_VALUE = re.compile(r"(?P<q1>[\"']?)(?P<sep>\s*[=:]\s*)(?P<val>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;)}\]]+)")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD_SPLIT = re.compile(r"[_.\-]+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?%?", re.I)

_PASSWORD_WORDS = frozenset({"password", "passwd", "passphrase"})
_SECRET_WORDS = frozenset({"secret", "secrets", "credential", "credentials", "apikey", "secretkey"})
_KEY_OWNERS = frozenset(
    {"api", "access", "secret", "private", "auth", "signing", "encryption", "master", "client", "account",
     "service", "subscription", "license", "app", "consumer", "webhook", "ssh", "gpg", "openai", "anthropic"}
)
_TOKEN_OWNERS = frozenset(
    {"access", "auth", "api", "refresh", "session", "hf", "hub", "huggingface", "github", "gh", "gitlab",
     "bearer", "oauth", "id", "slack", "npm", "pypi", "wandb", "secret", "private", "personal", "bot",
     "discord", "telegram", "csrf", "xsrf", "security", "upload", "deploy", "registry", "write", "read",
     "service", "user", "client", "app", "kaggle", "comet", "neptune", "replicate", "openai"}
)
_NOT_SECRET = frozenset({"", "true", "false", "none", "null", "nil", "yes", "no", "on", "off", "n/a", "-"})
# ``pass`` and ``pwd`` are left out on purpose: ``Forward pass: 12ms`` and
# ``PWD=/home/me`` are far more common in training logs than passwords under those names.


def secret_key_kind(key: str) -> str | None:
    """The kind of secret a key such as ``db_password`` or ``hfToken`` names, or None."""
    words = [w for w in _WORD_SPLIT.split(_CAMEL.sub(r"\1_\2", key).lower()) if w]
    if not words:
        return None
    last = words[-1]
    prev = words[-2] if len(words) > 1 else ""
    if last in _PASSWORD_WORDS:
        return "password"
    if last in _SECRET_WORDS:
        return "secret"
    if last == "key" and (prev in _KEY_OWNERS or prev in _SECRET_WORDS):
        return "secret"
    if last == "id" and prev == "key" and len(words) > 2 and words[-3] in _KEY_OWNERS:
        return "secret"  # aws_access_key_id
    if last == "token" and (not prev or prev in _TOKEN_OWNERS or key.isupper()):
        return "token"  # upper case: an environment variable (CI_JOB_TOKEN), never a tokenizer setting
    return None


def secret_value(value: str, kind: str) -> bool:
    """Whether ``value`` (unquoted) given to a key of ``kind`` looks like a secret, not a setting."""
    v = value.strip()
    if v.lower() in _NOT_SECRET or v.startswith(("[REDACTED", "$", "%(", "<", "{{")):
        return False
    if _NUMBER.fullmatch(v):
        return False
    if set(v) <= {"*", "x", "X", "."}:
        return False  # already masked
    if kind == "token":
        return len(v) >= 8
    return True


def _redact_pairs(text: str, low: str) -> tuple[str, int]:
    """``key=value`` pairs whose key names a secret, found from the keywords' positions."""
    hits: list[tuple[int, int]] = []
    for word in KEY_WORDS:
        at = low.find(word)
        while at >= 0:
            hits.append((at, at + len(word)))
            at = low.find(word, at + 1)
    hits.sort()
    edits: list[tuple[int, int, str]] = []
    last_key_end = -1
    for hit_start, hit_end in hits:
        if hit_start < last_key_end:
            continue  # a second keyword in a key already looked at (secret_key)
        key_end = _KEY_CHAR.match(text, hit_end).end()  # type: ignore[union-attr]
        last_key_end = key_end
        # Cheap refusals first: most keyword hits (max_tokens, tokenizer) have no secret's end
        # or no ``=``/``:`` after them.
        if not low[hit_start:key_end].endswith(_KEY_ENDINGS):
            continue
        m = _SEP_VALUE.match(text, key_end)
        if m is None:
            continue
        begin = hit_start
        while begin > 0 and text[begin - 1] in _KEY_CHARS_BACK:
            begin -= 1
        while begin < hit_start and text[begin] in "-.":
            begin += 1  # ``--api_key`` names the key ``api_key``
        if begin > 0 and text[begin - 1] in ".":
            continue
        key = text[begin:key_end]
        if not key or not (key[0].isalpha() or key[0] == "_"):
            continue
        kind = secret_key_kind(key)
        if kind is None:
            continue
        val = m.group("val")
        quote = val[0] if val[:1] in ("'", '"') and len(val) >= 2 and val[-1] == val[0] else ""
        inner = val[1:-1] if quote else val
        if not secret_value(inner, kind):
            continue
        start = m.start("val") + len(quote)
        edits.append((start, start + len(inner), _marker(kind)))
    for start, end, marker in reversed(edits):
        text = text[:start] + marker + text[end:]
    return text, len(edits)


def redact_text(text: str) -> tuple[str, int]:
    """``text`` with every secret-looking span replaced, and how many were replaced.

    Pure and thread-safe; never raises for any ``str``.  Costs one
    lower-casing and a few substring tests when ``text`` holds no trigger.
    """
    low = text.lower()
    count = 0
    for kind, triggers, pattern, keep in _SHAPES:
        for trigger in triggers:
            if trigger in low:
                break
        else:
            continue
        marker = _marker(kind)
        if keep:
            text, n = pattern.subn(lambda m, mk=marker: m.group(1) + mk, text)  # type: ignore[misc]
        else:
            text, n = pattern.subn(marker, text)
        if n:
            count += n
            low = text.lower()
    for word in KEY_WORDS:
        if word in low:
            text, n = _redact_pairs(text, low)
            return text, count + n
    return text, count


def redact_value(value: Any, depth: int = 0) -> tuple[Any, int]:
    """A wire-safe config value with secrets redacted: values of secret keys, and secrets in text.

    Maps, lists and text are rebuilt; other values are returned as they are.
    """
    if isinstance(value, str):
        return redact_text(value)
    if depth >= 32:
        return value, 0
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        total = 0
        for k, v in value.items():
            kind = secret_key_kind(k) if isinstance(k, str) else None
            out[k], n = redact_value(v, depth + 1)
            if not n and kind is not None and isinstance(v, str) and secret_value(v, kind):
                out[k], n = _marker(kind), 1
            total += n
        return out, total
    if isinstance(value, list):
        items = []
        total = 0
        for v in value:
            item, n = redact_value(v, depth + 1)
            items.append(item)
            total += n
        return items, total
    return value, 0


_FLAG = re.compile(r"-{1,2}([A-Za-z][\w.-]*)")


def redact_argv(argv: list[str]) -> tuple[list[str], int]:
    """``argv`` with secrets redacted: in each argument, and the value after a ``--password``-like flag."""
    out: list[str] = []
    total = 0
    after_secret_flag: str | None = None
    for arg in argv:
        text, n = redact_text(arg)
        if not n and after_secret_flag is not None and secret_value(arg, after_secret_flag):
            text, n = _marker(after_secret_flag), 1
        flag = _FLAG.fullmatch(arg)
        after_secret_flag = secret_key_kind(flag.group(1)) if flag is not None else None
        out.append(text)
        total += n
    return out, total
