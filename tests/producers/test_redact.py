"""Secret redaction: a corpus of secret shapes, near misses that must stay, and the SDK hook."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdk_support import read_envelopes, run_script, scaled, valid_records

from producers.batch import Batcher
from producers.records import LogLine, redact_run, start_record
from producers.redact import (
    _FAST_WORDS,
    _OPENING_WORDS,
    _PREFILTER_TABLE,
    _SCAN_TABLE,
    _TO_ASCII_LOWER,
    _WHITESPACE,
    LineRedactor,
    _redact_full,
    candidate,
    candidate_lines,
    redact_argv,
    redact_text,
    redact_value,
)
from runstream.topics import Topics
from runstream.wire import decode

# Synthetic secrets in realistic shapes, assembled at run time so that no
# scanner mistakes this file for a leak.
HF = "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3f"
AWS_ID = "AKIA" + "Z3XQ7RM2K8VN4PLW"
AWS_STS = "ASIA" + "Q4TY8WP2NC6ZKJ3M"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYzQ8kL2mN4p"
GH = "ghp_" + "1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R"
GH_PAT = "github_pat_11ABCDEFG0" + "x9Y8z7W6v5U4t3S2r1Q0p_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcdefghijklmnopq"
OPENAI = "sk-" + "T3BlbkFJ" + "x7Yq2Lm9Pz4Kc8Rv1Ns6Wb3H"
OPENAI_PROJ = "sk-proj-" + "Ab1Cd2Ef3Gh4_Ij5Kl6Mn7-Op8Qr9St0Uv1Wx2"
WANDB = "0f1e2d3c4b5a69788796a5b4c3d2e1f0" + "a1b2c3d4"
SLACK = "xoxb-" + "2718281828-3141592653-" + "kQ8vXr2LmNp4TzWy6JcB9dFh"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ."
    + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAz5x1Qm8\nq7Lw3Zk9Rt2Vb\n" + "-----END RSA PRIVATE KEY-----"

SECRETS: list[tuple[str, str, str]] = [
    # (line, the secret that must disappear, the kind in its marker)
    (f"export HF_TOKEN={HF}", HF, "hf_token"),
    (f"Logging in to the Hub with {HF} ...", HF, "hf_token"),
    (f"aws_access_key_id = {AWS_ID}", AWS_ID, "aws_access_key_id"),
    (f"session key {AWS_STS} expires in 1h", AWS_STS, "aws_access_key_id"),
    (f"aws_secret_access_key={AWS_SECRET}", AWS_SECRET, "aws_secret_access_key"),
    (f"AWS_SECRET_ACCESS_KEY: {AWS_SECRET}", AWS_SECRET, "aws_secret_access_key"),
    (f"git remote token {GH} ok", GH, "github_token"),
    (f"GH_PAT={GH_PAT}", GH_PAT, "github_token"),
    (f"OPENAI_API_KEY={OPENAI}", OPENAI, "openai_key"),
    (f"client = OpenAI(api_key='{OPENAI_PROJ}')", OPENAI_PROJ, "openai_key"),
    (f"WANDB_API_KEY={WANDB}", WANDB, "wandb_key"),
    (f"$ wandb login --relogin {WANDB}", WANDB, "wandb_key"),
    (f"posting with {SLACK}", SLACK, "slack_token"),
    (f"id_token: {JWT}", JWT, "jwt"),
    ("Authorization: Bearer 9Kx2Lm7Qp4Rz8Vw1Nc6Bt3", "9Kx2Lm7Qp4Rz8Vw1Nc6Bt3", "auth_header"),
    ("headers={'Authorization': 'token 0f9e8d7c6b5a4f3e'}", "0f9e8d7c6b5a4f3e", "auth_header"),
    ("curl -H 'bearer Zx9Yw8Xv7Wu6Vt5Us4Tr'", "Zx9Yw8Xv7Wu6Vt5Us4Tr", "auth_header"),
    ("git clone https://alice:s3cr3t%40pw@github.com/org/repo.git", "s3cr3t%40pw", "url_password"),
    ("DSN postgresql://trainer:Hunter2xyz@db.internal:5432/runs", "Hunter2xyz", "url_password"),
    (f"Traceback: bad key\n{PEM}\nend", "MIIEowIBAAKCAQEAz5x1Qm8", "private_key"),
    ("password=hunter2 user=bob", "hunter2", "password"),
    ("{'db_password': 'Tr0ub4dor&3', 'lr': 0.1}", "Tr0ub4dor&3", "password"),
    ('{"api_key": "abcd1234efgh5678"}', "abcd1234efgh5678", "secret"),
    ("client_secret: 7f8e9d0c1b2a", "7f8e9d0c1b2a", "secret"),
    ("apiKey=AbCdEf123456", "AbCdEf123456", "secret"),
    ("MLFLOW_TRACKING_TOKEN=dapi0123456789abcdef", "dapi0123456789abcdef", "token"),
    ("refresh_token: 'rt_9Qw8Er7Ty6Ui5Op4'", "rt_9Qw8Er7Ty6Ui5Op4", "token"),
]

NEAR_MISSES = [
    "use_cls_token=True max_tokens=2048 tokens/s=1234.5 tokenizer=bert-base-uncased",
    "num_tokens=512 total_tokens: 1048576 token_type_ids: [0, 0, 0]",
    "pad_token=<pad> eos_token='</s>' bos_token_id=1 unk_token: <unk>",
    "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "commit 1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b (HEAD -> main)",
    "run_id=123e4567-e89b-12d3-a456-426614174000",
    "hf_hub_download(repo_id='bert-base') hf_model_name=llama",
    "pip install scikit-learn==1.3 sk-learn",
    "Forward pass: 12ms PWD=/home/me",
    "password: ${DB_PASSWORD} token: null secret_dim=4 api_key: None",
    "email alice@example.com; ssh git@github.com:org/repo.git",
    "https://user@host.example.com/path http://localhost:8080/x@y",
    "key=loss monitor_key: val_loss sort_key=name",
    "Setting `pad_token_id` to `eos_token_id`:50256 for open-end generation.",
    "[INFO] keys=['model', 'optimizer'] access granted, secret sauce: 3 layers",
    "Authorization required; see the docs",
]


@pytest.mark.parametrize(("line", "secret", "kind"), SECRETS, ids=[s[2] + str(i) for i, s in enumerate(SECRETS)])
def test_secret_is_replaced_by_its_marker(line: str, secret: str, kind: str) -> None:
    """Each secret shape is replaced by ``[REDACTED:<kind>]`` and counted."""
    out, n = redact_text(line)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out
    assert n >= 1


@pytest.mark.parametrize("line", NEAR_MISSES)
def test_near_miss_is_left_alone(line: str) -> None:
    """Lines that only look a little like secrets (tokenizer settings, digests, ids) are unchanged."""
    assert redact_text(line) == (line, 0)


def test_url_password_keeps_user_and_host() -> None:
    """Only the password of ``user:pass@host`` goes; user and host stay readable."""
    out, _ = redact_text("fetching https://alice:pa55word@example.org/x")
    assert out == "fetching https://alice:[REDACTED:url_password]@example.org/x"


def _variants(line: str) -> list[str]:
    return [line, line.upper(), line.lower(), f"prefix {line} suffix", f"'{line}'"]


def test_prefilter_passes_every_line_that_full_redaction_changes(real_logs_dir: Path) -> None:
    """Whatever the shapes and key=value rules would change, the prefilter lets through (any case)."""
    lines = [v for line, _, _ in SECRETS for v in _variants(line)]
    lines += [v for line in NEAR_MISSES for v in _variants(line)]
    lines += [
        line
        for path in sorted(real_logs_dir.iterdir())
        if path.suffix not in (".tsv", ".md")
        for line in path.read_text(errors="replace").split("\n")[:3000]
    ]
    missed = [line for line in lines if _redact_full(line)[1] and not candidate(line)]
    assert missed == []
    assert sum(_redact_full(line)[1] > 0 for line in lines) >= len(SECRETS)


def test_batch_prefilter_finds_the_same_lines_as_the_line_prefilter() -> None:
    """``candidate_lines`` on a batch marks every line ``candidate`` passes, and no clean line."""
    lines = [line for pair in zip(NEAR_MISSES, [s[0] for s in SECRETS], strict=False) for line in pair]
    lines += ["step 1 loss 0.5", "", "ümlaut İstanbul key=Hunter22", "x" * 10_000]
    marked = candidate_lines(lines)
    assert set(marked) >= {i for i, line in enumerate(lines) if candidate(line)}
    assert all(candidate(lines[i]) or candidate(lines[i - 1] + "\n" + lines[i]) for i in marked)
    assert candidate_lines(["step 1 loss 0.5 tokens/s=123456 max_tokens=2048"] * 100) == []


# Secrets whose key and separator are apart by whitespace other than a space.
SPACED = [
    "api_token\u3000= abcdefgh12345",
    "db_password\t:\xa0hunter2",
    "client_secret\u2003=\u2003s3cr3tvalue",
    "API_KEY\x0b= AbCdEf123456",
    "Authorization\u2009: Bearer 9Kx2Lm7Qp4Rz8Vw1Nc6Bt3",
    f"wandb\u00a0login {WANDB}",
    "curl -H 'bearer\u205fZx9Yw8Xv7Wu6Vt5Us4Tr'",
]


def test_whitespace_table_is_what_the_patterns_call_whitespace() -> None:
    """The batch scan's whitespace followers are exactly the characters ``\\s`` matches."""
    assert set(_WHITESPACE) == {chr(c) for c in range(0x110000) if re.fullmatch(r"\s", chr(c))}


def test_every_prefilter_match_starts_with_one_of_its_openings(real_logs_dir: Path) -> None:
    """The batch scan looks for the openings only: every match of a pattern must begin with one."""
    lines = [v for line, _, _ in SECRETS for v in _variants(line)]
    lines += [v for line in NEAR_MISSES + SPACED for v in _variants(line)]
    lines += (real_logs_dir / "deepspeed_chat_step2_dpo_opt350m_8gpu.log").read_text(errors="replace").split("\n")
    seen = 0
    for line in lines:
        low = line.lower()
        for _, pattern, openings in _PREFILTER_TABLE:
            for m in re.finditer(pattern, low):
                seen += 1
                assert any(low.startswith(o, m.start()) for o in openings), (pattern, line)
    assert seen >= len(SECRETS) + len(SPACED)


@pytest.mark.parametrize("line", SPACED)
def test_secret_after_unusual_whitespace_is_found_in_a_batch(line: str) -> None:
    """A key and its value apart by a tab or a Unicode space still mark the line, and it is redacted."""
    batch = ["step 1 loss 0.5 tokens/s=123", line, "epoch 2 done"]
    assert candidate(line)
    assert candidate_lines(batch) == [1]
    assert redact_text(line)[1] >= 1


def test_only_the_listed_characters_lower_case_into_ascii() -> None:
    """Beyond ASCII, only the characters the batch scan rules out first have an ASCII letter in their lower case."""
    into_ascii = {chr(c) for c in range(0x80, 0x110000) if any(x.isascii() for x in chr(c).lower())}
    assert into_ascii == set(_TO_ASCII_LOWER)


def test_no_character_lower_cases_into_whitespace() -> None:
    """Whitespace has no case: no other character lower-cases into one (the scan lower-cases bytes only)."""
    spaces = set(_WHITESPACE)
    assert [hex(c) for c in range(0x110000) if chr(c) not in spaces and spaces & set(chr(c).lower())] == []


def test_every_ascii_opening_holds_a_fast_scan_word_at_its_start() -> None:
    """Each ASCII opening, as the fast scan sees its bytes, starts with one of the fast scan's words."""
    for word in _OPENING_WORDS:
        if word.isascii():
            seen = word.encode().translate(_SCAN_TABLE).decode()
            assert any(seen.startswith(fast) for fast in _FAST_WORDS), word


# Secret-like ``key sep value`` pieces, cased and spaced every way the scans treat differently.
_KEYS = ["key", "API_KEY", "api_\u212aey", "\u0130d_token", "Token", "max_tokens", "Bearer", "https://me:pw@h", "x"]
_SPACES = ["", " ", "\t", "\x0b", "\xa0", "\u3000", "\n"]
_PIECE = st.tuples(
    st.sampled_from(["", "step 1 ", "█ "]),
    st.sampled_from(_KEYS),
    st.sampled_from(_SPACES),
    st.sampled_from(["=", ":", '"', ""]),
    st.sampled_from(_SPACES),
    st.sampled_from(["s3cr3tValue99", "8", "", "eyJhbGciOi.eyJzdWIiOi.sig"]),
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECE, min_size=1, max_size=12).map(" ".join))
def test_batch_prefilter_marks_exactly_the_lines_the_line_prefilter_passes(text: str) -> None:
    """On any lines built from secret-like pieces, ``candidate_lines`` marks exactly the lines ``candidate`` passes."""
    lines = text.split("\n")
    assert candidate_lines(lines) == [i for i, line in enumerate(lines) if candidate(line)]


def test_key_spelled_with_kelvin_sign_is_marked_in_a_batch() -> None:
    """A key whose K is the Kelvin sign (lower case: an ASCII k) still marks its line in a batch."""
    line = "API_\u212aEY=Hunter22secret"
    assert candidate(line)
    assert candidate_lines(["step 1 loss 0.5", line, "done"]) == [1]


def test_batch_prefilter_marks_the_real_logs_as_the_line_prefilter_does(real_logs_dir: Path) -> None:
    """On real training logs, batches of 1000 lines mark exactly the lines that ``candidate`` passes."""
    for path in sorted(real_logs_dir.iterdir()):
        if path.suffix in (".tsv", ".md"):
            continue
        lines = path.read_text(errors="replace").split("\n")
        for at in range(0, len(lines), 1000):
            batch = lines[at : at + 1000]
            assert candidate_lines(batch) == [i for i, line in enumerate(batch) if candidate(line)], path.name


def test_clean_line_is_not_a_candidate(real_logs_dir: Path) -> None:
    """Most real log lines fail the prefilter, so they cost only the substring checks."""
    lines = (real_logs_dir / "deepspeed_chat_step2_dpo_opt350m_8gpu.log").read_text(errors="replace").splitlines()
    assert sum(candidate(line) for line in lines) < len(lines) / 2


def test_real_logs_are_unchanged(real_logs_dir: Path) -> None:
    """The real training logs hold no secret-looking span: redaction changes none of their lines."""
    changed = []
    for path in sorted(real_logs_dir.iterdir()):
        if path.suffix in (".tsv", ".md"):
            continue
        for line in path.read_text(errors="replace").split("\n"):
            out, n = redact_text(line)
            if n or out != line:
                changed.append((path.name, line[:120]))
    assert changed == []


def test_argv_value_after_a_secret_flag_is_redacted() -> None:
    """``--password X`` loses X; ``--api_key=X`` and token shapes too; other flags stay."""
    argv = ["train.py", "--hf-token", HF, "--password", "pw1", "--lr", "3e-4", "--api_key=abc12345678"]
    out, n = redact_argv(argv)
    assert out == [
        "train.py",
        "--hf-token",
        "[REDACTED:hf_token]",
        "--password",
        "[REDACTED:password]",
        "--lr",
        "3e-4",
        "--api_key=[REDACTED:secret]",
    ]
    assert n == 3


def test_config_secret_values_are_redacted_and_settings_kept() -> None:
    """Config values under secret keys and secret shapes in text go; numbers and ML settings stay."""
    config = {
        "lr": 3e-4,
        "wandb": {"api_key": "0123456789abcdef", "project": "p"},
        "max_tokens": 4096,
        "pad_token": "<pad>",
        "hub": [HF, "bert-base"],
    }
    out, n = redact_value(config)
    assert out == {
        "lr": 3e-4,
        "wandb": {"api_key": "[REDACTED:secret]", "project": "p"},
        "max_tokens": 4096,
        "pad_token": "<pad>",
        "hub": ["[REDACTED:hf_token]", "bert-base"],
    }
    assert n == 2


def test_start_record_name_tags_config_argv_are_redacted() -> None:
    """A ``start`` record leaves the host with no secret in its name, tags, config or argv."""
    rec = start_record(
        project="p",
        name=f"run-{HF}",
        config={"password": "hunter2"},
        tags=[f"key {GH}"],
        host="h",
        pid=1,
        world_size=1,
        argv=["x.py", "--token", "abcdefgh12345678"],
    )
    assert redact_run(rec) == 4
    text = repr(rec)
    assert HF not in text and GH not in text and "hunter2" not in text and "abcdefgh12345678" not in text


def test_batcher_redacts_and_counts_log_lines() -> None:
    """Envelopes built from log items carry redacted lines; the batcher counts the spans."""
    batcher = Batcher(producer="p", run="r", node="n", rank=0)
    items = [
        LogLine(time.time_ns(), f"HF_TOKEN={HF}", "stdout", "", ""),
        LogLine(time.time_ns(), "step 1 loss 0.5", "stdout", "", ""),
    ]
    (batch,) = batcher.build("logs", 0, items).batches
    lines = [r["line"] for r in decode(batch.value).records]
    assert lines == ["HF_TOKEN=[REDACTED:hf_token]", "step 1 loss 0.5"]
    assert batcher.redacted["logs"] == 1


def test_batcher_without_redaction_sends_lines_as_they_are() -> None:
    """``redact=False`` turns the hook off (the line is sent unchanged)."""
    batcher = Batcher(producer="p", run="r", node="n", rank=0, redact=False)
    (batch,) = batcher.build("logs", 0, [LogLine(1, f"x {HF}", "stdout", "", "")]).batches
    assert decode(batch.value).records[0]["line"] == f"x {HF}"


PEM_LINES = PEM.split("\n")


@pytest.mark.parametrize(
    "body",
    [
        PEM_LINES,
        ["-----BEGIN OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAA", "-----END OPENSSH PRIVATE KEY-----"],
        [
            "-----BEGIN ENCRYPTED PRIVATE KEY-----",
            "Proc-Type: 4,ENCRYPTED",
            "DEK-Info: AES-128-CBC,0A1B",
            "",
            "MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkq",
            "-----END ENCRYPTED PRIVATE KEY-----",
        ],
    ],
    ids=["rsa", "openssh", "encrypted"],
)
def test_pem_block_printed_line_by_line_is_redacted_whole(body: list[str]) -> None:
    """A private key printed one line per record: BEGIN, body and END lines all become markers."""
    lines = ["loading key", *body, "key loaded, step 1"]
    changes, n = LineRedactor().redact(lines, ["stdout"] * len(lines))
    assert sorted(changes) == list(range(1, len(body) + 1))
    assert all(line == "[REDACTED:private_key]" for line in changes.values())
    assert n == 1


def test_pem_block_split_across_batches_and_interleaved_with_stderr() -> None:
    """The open block carries over to the next batch; another stream's lines in between are kept."""
    red = LineRedactor()
    first, _ = red.redact([PEM_LINES[0], PEM_LINES[1], "warning: slow"], ["stdout", "stdout", "stderr"])
    assert sorted(first) == [0, 1]
    second, _ = red.redact([PEM_LINES[2], PEM_LINES[3], "epoch 1 done"], ["stdout"] * 3)
    assert second == {0: "[REDACTED:private_key]", 1: "[REDACTED:private_key]"}


def test_pem_block_without_end_stops_at_the_first_line_that_is_no_key() -> None:
    """A BEGIN line with no END: body lines go, the first ordinary line after them is kept."""
    lines = ["-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0B", "epoch 1 loss=0.5", "MIIEvQ"]
    changes, _ = LineRedactor().redact(lines, ["stdout"] * 4)
    assert sorted(changes) == [0, 1]


def test_certificate_and_near_misses_open_no_block() -> None:
    """A public certificate or a lone END line redacts nothing and opens no block."""
    lines = [
        "-----BEGIN CERTIFICATE-----",
        "MIIDdzCCAl+gAwIBAgIE",
        "-----END CERTIFICATE-----",
        "-----END RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEAz5x1Qm8",
    ]
    assert LineRedactor().redact(lines, ["stdout"] * 5) == ({}, 0)


def test_batcher_redacts_a_pem_block_across_envelopes() -> None:
    """Log items built into two envelopes: the key's body never leaves in either."""
    batcher = Batcher(producer="p", run="r", node="n", rank=0)
    items = [LogLine(i, line, "stdout", "", "") for i, line in enumerate(PEM_LINES)]
    sent = [
        r["line"]
        for part in (items[:2], items[2:])
        for batch in batcher.build("logs", 0, part).batches
        for r in decode(batch.value).records
    ]
    assert sent == ["[REDACTED:private_key]"] * len(PEM_LINES)
    assert batcher.redacted["logs"] == 1


TRAINER = r"""
import sys, runstream
run = runstream.init(project="redact", config={"hf_token": "%s"}, tags=["t"])
print("token is %s")
print("clean line")
run.flush(30)
red = run.stats()["redacted"]
print(f"STATS logs={red['logs']} runs={red['runs']}", file=sys.__stderr__, flush=True)
run.finish()
"""


def test_secrets_never_reach_the_broker(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """A trainer printing a token and configured with one: the raw topics hold only markers."""
    code = TRAINER % (HF, GH)
    env = {
        "RUNSTREAM_KAFKA": sdk_broker,
        "RUNSTREAM_TOPIC_PREFIX": sdk_topics.prefix,
        "RUNSTREAM_DATA_DIR": str(tmp_path),
    }
    proc = run_script(code, env, scaled(60))
    assert proc.returncode == 0, proc.stderr
    assert "STATS logs=1 runs=1" in proc.stderr

    def done(found: dict[str, list]) -> bool:  # type: ignore[type-arg]
        return any(r.get("event") == "finish" for e in found["runs"] for r in e.records)

    found = asyncio.run(read_envelopes(sdk_broker, sdk_topics, ("runs", "logs"), done, scaled(20)))
    lines = [r["line"] for r in valid_records(found["logs"])]
    assert lines == ["token is [REDACTED:github_token]", "clean line"]
    start = valid_records(found["runs"])[0]
    assert start["config"]["hf_token"] == "[REDACTED:hf_token]"
