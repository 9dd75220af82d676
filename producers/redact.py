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

Log lines are redacted a batch at a time by a :class:`LineRedactor`, which
finds the candidate lines of a whole batch in one native-code scan
(:func:`candidate_lines`: an Aho-Corasick automaton of the patterns'
openings) and remembers a PEM block left open at the end of a line: a
private key printed line by line (``-----BEGIN ... PRIVATE
KEY-----``, its base64 body, ``-----END ... PRIVATE KEY-----``, as separate
records of one stream, across batches too) is redacted whole, each body line
replaced by the marker.  The block ends at its ``END`` line, or at the first
line of its stream that is no PEM body (base64 or an RFC 1421 header), or
after :data:`MAX_PEM_LINES` lines.

Not recognised: other secrets split across two records, and free-form
secrets with no key, prefix or header around them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import ahocorasick_rs

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
        re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.S),
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
        re.compile(r"(?i)(aws_secret_access_key[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),
        1,
    ),
    (
        "github_token",
        ("ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"),
        re.compile(r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{30,})(?![A-Za-z0-9])"),
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

#: Every character that ``\s`` matches in a ``str`` pattern (a test checks it against ``re``).
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
#: What may follow a secret's key word: a closing quote, whitespace, ``=`` or ``:`` (``["']?\s*[=:]``).
_AFTER_KEY = "\"'=:" + _WHITESPACE


def _then(word: str, followers: str) -> tuple[str, ...]:
    return tuple(word + c for c in followers)


#: The prefilter, run on lower-cased text: (a literal, a pattern, the pattern's openings).
#: Wherever a shape above or a ``key=value`` secret (:func:`_redact_pairs`)
#: matches, the literal is present and the pattern matches too (each is a
#: looser form of what it stands for), so text that passes none of them holds
#: no secret we recognise.  Each pattern starts with its literal, which lets
#: the regex engine skip to it at C speed; the ``in`` test before it costs
#: less still.  The openings are longer literals, one of which starts every
#: match of the pattern (``token`` is followed by a quote, whitespace, ``=``
#: or ``:``): the batch scan (:func:`candidate_lines`) looks for all of them
#: in one pass, and common words (``tokens``, ``length``, ``keys``) hold none.
_PREFILTER_TABLE: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("-----begin ", r"-----begin ", ("-----begin ",)),
    ("eyj", r"eyj[a-z0-9_-]{5,}\.eyj", ("eyj",)),
    ("hf_", r"hf_[a-z0-9]{30}", ("hf_",)),
    ("akia", r"akia[a-z0-9]{16}", ("akia",)),
    ("asia", r"asia[a-z0-9]{16}", ("asia",)),
    ("gh", r"gh[pousr]_[a-z0-9]{36}", tuple(f"gh{c}_" for c in "pousr")),
    ("github_pat_", r"github_pat_", ("github_pat_",)),
    ("sk-", r"sk-[a-z0-9_-]{20}", ("sk-",)),
    ("wandb", r"wandb(?:_api_key|\s+login)", ("wandb_api_key", *_then("wandb", _WHITESPACE))),
    ("xox", r"xox[abposre]-", tuple(f"xox{c}-" for c in "abposre")),
    ("xapp-", r"xapp-\d-", ("xapp-",)),
    ("hooks.slack.com", r"hooks\.slack\.com", ("hooks.slack.com",)),
    ("authorization", r"authorization[\"']?\s*[:=]", _then("authorization", _AFTER_KEY)),
    ("bearer", r"bearer\s+[a-z0-9._~+/=-]{16}", _then("bearer", _WHITESPACE)),
    ("://", r"://[^\s:/@?#\[\]]*:[^\s@/?#]+@", ("://",)),
    # ``key=value`` secrets: a key ending (see _KEY_ENDINGS), then ``=`` or ``:``.
    ("pass", r"pass(?:word|wd|phrase)[\"']?\s*[=:]", ("password", "passwd", "passphrase")),
    ("secret", r"secrets?[\"']?\s*[=:]", ("secret",)),
    ("credential", r"credentials?[\"']?\s*[=:]", ("credential",)),
    ("key", r"key(?:[_.-]?id)?[\"']?\s*[=:]", ("key_id", "key.id", "key-id", "keyid", *_then("key", _AFTER_KEY))),
    ("token", r"token[\"']?\s*[=:]", _then("token", _AFTER_KEY)),
)
_PREFILTER: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (literal, re.compile(pattern)) for literal, pattern, _ in _PREFILTER_TABLE
)

#: The literals of the prefilter (a line holding none of them holds no secret we recognise).
TRIGGERS: tuple[str, ...] = tuple(literal for literal, _ in _PREFILTER)


#: Every pattern's openings.
_OPENING_WORDS: tuple[str, ...] = tuple(dict.fromkeys(o for _, _, openings in _PREFILTER_TABLE for o in openings))
#: The general scan: every opening, every occurrence (overlapping ones too), over the batch's
#: lower-cased UTF-8 bytes.  Used for a batch that holds whitespace beyond ASCII.
_OPENINGS = ahocorasick_rs.BytesAhoCorasick(
    [w.encode() for w in _OPENING_WORDS], implementation=ahocorasick_rs.Implementation.DFA
)
#: Maps each byte as the fast scan sees it: ASCII letters lower-cased, ASCII whitespace made a
#: space (``bytes.translate``: one pass, in C).
_SCAN_TABLE = bytes((32 if chr(b) in _WHITESPACE else ord(chr(b).lower())) if b < 128 else b for b in range(256))
#: The openings as the fast scan sees them: those made of ASCII only, a whitespace follower
#: made a space; ``authorization`` and ``xox`` alone stand for their variants (rare words, so
#: the few lines they mark in excess cost little).  Few enough (under 64) for the automaton's
#: vectorised prefilter, which scans several times faster than the general automaton.
_FAST_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        "authorization"
        if w.startswith("authorization")
        else "xox"
        if w.startswith("xox")
        else (w[:-1] + " " if w[-1] in _WHITESPACE else w)
        for w in _OPENING_WORDS
        if w.isascii()
    )
)
_FAST_OPENINGS = ahocorasick_rs.BytesAhoCorasick(
    [w.encode() for w in _FAST_WORDS], matchkind=ahocorasick_rs.MatchKind.LeftmostFirst
)
#: Whitespace beyond ASCII, whose openings the fast scan leaves out: found in a batch, it sends
#: the batch to the general scan.
_WIDE_SPACES = ahocorasick_rs.BytesAhoCorasick(
    [c.encode() for c in _WHITESPACE if not c.isascii()], matchkind=ahocorasick_rs.MatchKind.LeftmostFirst
)


#: The only characters beyond ASCII whose lower case holds an ASCII letter (KELVIN SIGN -> ``k``,
#: LATIN CAPITAL LETTER I WITH DOT ABOVE -> ``i`` + a combining dot); a test checks the list.
_TO_ASCII_LOWER = ("\u212a", "\u0130")


def candidate(text: str) -> bool:
    """Whether ``text`` may hold a secret (false means :func:`redact_text` would change nothing).

    One lower-casing, a substring test per :data:`TRIGGERS` entry and, for
    the literals present, one anchored pattern search.
    """
    low = text.lower()
    for literal, pattern in _PREFILTER:
        if literal in low and pattern.search(low) is not None:
            return True
    return False


def candidate_lines(lines: Sequence[str]) -> list[int]:
    """The indices of ``lines`` that may hold a secret: those :func:`candidate` passes, for a whole batch.

    The lines are joined, encoded, ASCII-lower-cased and scanned once, in
    native code, for the patterns' openings (an Aho-Corasick automaton); only
    a line holding an opening is then checked by :func:`candidate`.  So a
    batch of clean lines costs a join, an encoding, a bytes lower-casing and
    one scan, and the per-line cost of a Python call is paid only by the
    lines found.  Every match of a pattern begins with one of its openings
    (a test checks it), so no line that :func:`candidate` passes is missed.
    """
    joined = "\n".join(lines)
    wide = not joined.isascii()
    if wide and (_TO_ASCII_LOWER[0] in joined or _TO_ASCII_LOWER[1] in joined):
        return [i for i, line in enumerate(lines) if candidate(line)]
    # The openings are ASCII letters and punctuation, and whitespace that has no case: so
    # lower-casing the ASCII letters of the UTF-8 bytes (several times cheaper than
    # str.lower()) finds the same openings as scanning the lower-cased text would, once the
    # two characters whose lower case holds an ASCII letter are ruled out above.
    data = joined.encode("utf-8", "surrogatepass")
    # The fast scan reports matches that do not overlap: an opening hidden by an earlier match
    # lies in that match's line (a match crossing a line end ends there, on its space), so
    # every line holding an opening is still marked, and candidate() then checks it whole.
    if wide and _WIDE_SPACES.find_matches_as_indexes(data):  # whitespace beyond ASCII: the general scan
        starts = sorted({start for _, start, _ in _OPENINGS.find_matches_as_indexes(data.lower(), overlapping=True)})
    else:
        starts = [start for _, start, _ in _FAST_OPENINGS.find_matches_as_indexes(data.translate(_SCAN_TABLE))]
    if not starts:  # the common case: one scan, nothing found
        return []
    found: set[int] = set()
    line = pos = 0
    for start in starts:
        line += data.count(b"\n", pos, start)  # the line an opening starts in: newlines before it
        pos = start
        found.add(line)
    return [i for i in sorted(found) if candidate(lines[i])]


#: How a key naming a secret ends (lower case; camelCase keys end the same way).
_KEY_ENDINGS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "secrets",
    "credential",
    "credentials",
    "key",
    "token",
    "keyid",
    "key_id",
    "key-id",
    "key.id",
)
_KEY_CHAR = re.compile(r"[\w.-]*")
_KEY_CHARS_BACK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_SEP_VALUE = re.compile(r"(?P<q1>[\"']?)(?P<sep>\s*[=:]\s*)(?P<val>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;)}\]]+)")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD_SPLIT = re.compile(r"[_.\-]+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?%?", re.I)

_PASSWORD_WORDS = frozenset({"password", "passwd", "passphrase"})
_SECRET_WORDS = frozenset({"secret", "secrets", "credential", "credentials", "apikey", "secretkey"})
_KEY_OWNERS = frozenset(
    {
        "api",
        "access",
        "secret",
        "private",
        "auth",
        "signing",
        "encryption",
        "master",
        "client",
        "account",
        "service",
        "subscription",
        "license",
        "app",
        "consumer",
        "webhook",
        "ssh",
        "gpg",
        "openai",
        "anthropic",
    }
)
_TOKEN_OWNERS = frozenset(
    {
        "access",
        "auth",
        "api",
        "refresh",
        "session",
        "hf",
        "hub",
        "huggingface",
        "github",
        "gh",
        "gitlab",
        "bearer",
        "oauth",
        "id",
        "slack",
        "npm",
        "pypi",
        "wandb",
        "secret",
        "private",
        "personal",
        "bot",
        "discord",
        "telegram",
        "csrf",
        "xsrf",
        "security",
        "upload",
        "deploy",
        "registry",
        "write",
        "read",
        "service",
        "user",
        "client",
        "app",
        "kaggle",
        "comet",
        "neptune",
        "replicate",
        "openai",
    }
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

    Pure and thread-safe; never raises for any ``str``.  Costs what
    :func:`candidate` costs when ``text`` holds no trigger.
    """
    if not candidate(text):
        return text, 0
    return _redact_full(text)


def _redact_full(text: str) -> tuple[str, int]:
    """:func:`redact_text` without the prefilter (every shape's triggers are still checked)."""
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


#: Most body lines of one PEM block redacted after its ``BEGIN`` line (a 16384-bit RSA key has ~200).
MAX_PEM_LINES = 512
_PEM_BEGIN = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----")
_PEM_BODY = re.compile(r"[A-Za-z0-9+/=\s]*|(?:Proc-Type|DEK-Info|Comment):.*")


class LineRedactor:
    """Redacts consecutive batches of one producer's log lines (not thread-safe: one sender owns it).

    Holds, per stream, whether a PEM private-key block is open (its ``BEGIN``
    line seen, its ``END`` line not yet): see the module docstring.
    """

    def __init__(self) -> None:
        #: Stream -> body lines redacted so far, for each stream inside a PEM block.
        self._open: dict[str, int] = {}

    def redact(self, lines: Sequence[str], streams: Sequence[str]) -> tuple[dict[int, str], int]:
        """The redacted form of each line that changes (by index) and the number of spans replaced.

        ``streams[i]`` names the stream of ``lines[i]`` (PEM blocks are tracked per stream).
        Never raises for any ``str`` lines.
        """
        hits = candidate_lines(lines)
        if not hits and not self._open:
            return {}, 0
        changes: dict[int, str] = {}
        count = 0
        pending = hits[::-1]  # popped from the end: ascending
        i = 0 if self._open else pending[-1]
        while i < len(lines):
            while pending and pending[-1] < i:
                pending.pop()
            hit = bool(pending) and pending[-1] == i
            stream = streams[i]
            line = lines[i]
            if stream in self._open:
                out, n = self._inside(line, stream, hit)
            elif hit:
                out, n = self._line(line, stream)
            else:
                out, n = line, 0
            if out != line:
                changes[i] = out
            count += n
            i += 1
            if not self._open:
                while pending and pending[-1] < i:
                    pending.pop()
                if not pending:
                    break
                i = pending[-1]
        return changes, count

    def _line(self, line: str, stream: str) -> tuple[str, int]:
        out, n = redact_text(line)
        begins = list(_PEM_BEGIN.finditer(line)) if n else []
        if begins and _PEM_END.search(line, begins[-1].end()) is None:
            self._open[stream] = 0  # the block goes on in the next lines of this stream
        return out, n

    def _inside(self, line: str, stream: str, hit: bool) -> tuple[str, int]:
        end = _PEM_END.search(line)
        if end is not None:
            del self._open[stream]
            rest, n = redact_text(line[end.end() :])
            return _marker("private_key") + rest, n
        if self._open[stream] < MAX_PEM_LINES and _PEM_BODY.fullmatch(line):
            self._open[stream] += 1
            return _marker("private_key"), 0
        del self._open[stream]  # not a key's body after all: an ordinary line
        return self._line(line, stream) if hit else (line, 0)


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
