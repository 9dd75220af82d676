"""Enrichment of log lines, on the real training logs: levels, tags, tracebacks, metrics."""

from __future__ import annotations

import math
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from runstream import wire
from runstream.events import Limits
from streams import signatures
from streams.enrich import LogEnricher
from streams.extract import extract
from streams.levels import detect_level, strip_decorations
from streams.signatures import tags_of
from streams.tracebacks import TracebackGrouper
from streams.validate import process

TS = 1_795_428_000 * 1_000_000_000


def _lines(real_logs_dir: Path, name: str) -> list[str]:
    return (real_logs_dir / name).read_text(errors="replace").split("\n")


def _records(lines: list[str], start: int = 0) -> list[dict[str, object]]:
    return [
        {"ts_ns": TS + i, "line": ln, "stream": "stdout", "level": "", "logger": "", "i": start + i}
        for i, ln in enumerate(lines)
    ]


def test_levels_of_common_formats(real_logs_dir: Path) -> None:
    """DeepSpeed, detectron2, glog, NCCL, rich/ANSI and exception lines get their level."""
    ds = _lines(real_logs_dir, "deepspeed_chat_step2_dpo_opt350m_8gpu.log")
    assert detect_level(next(ln for ln in ds if "] [WARNING] [" in ln)) == "WARNING"
    d2 = _lines(real_logs_dir, "detectron2_faster_rcnn_6gpu_log.txt")
    assert detect_level(next(ln for ln in d2 if "d2.utils.events INFO:" in ln)) == "INFO"
    olmo = _lines(real_logs_dir, "olmo_1b_torchrun_8gpu_sighup_tracebacks.log")
    assert detect_level(next(ln for ln in olmo if ln.startswith("W1212 "))) == "WARNING"
    nccl = _lines(real_logs_dir, "nccl_tests_allreduce_nccl_debug_info.log")
    assert detect_level(next(ln for ln in nccl if "NCCL INFO" in ln)) == "INFO"
    rich = _lines(real_logs_dir, "lightning_tmr_rich_ansi_train.out")
    assert detect_level(next(ln for ln in rich if "\x1b" in ln and "INFO" in ln)) == "INFO"
    oom = _lines(real_logs_dir, "nanogpt_torch_compile_cuda_oom_wandb_output.log")
    assert detect_level(next(ln for ln in oom if ln.startswith("torch.cuda.OutOfMemoryError"))) == "ERROR"


def test_plain_output_has_no_guessed_level(real_logs_dir: Path) -> None:
    """Lines naming no level (nanoGPT step lines) stay unknown."""
    lines = _lines(real_logs_dir, "nanogpt_enwik8_char_wandb_output.log")
    assert {detect_level(ln) for ln in lines if ln.startswith("iter ")} == {""}


def test_rank_prefix_is_parsed_and_stripped() -> None:
    """A torchrun ``[rankN]:`` prefix yields the rank and the text after it."""
    assert strip_decorations("[rank3]: Traceback (most recent call last):") == ("Traceback (most recent call last):", 3)


def test_oom_traceback_is_tagged(real_logs_dir: Path) -> None:
    """The real CUDA OOM log yields a traceback tag and an oom tag."""
    tags = [t for ln in _lines(real_logs_dir, "nanogpt_torch_compile_cuda_oom_wandb_output.log") for t in tags_of(ln)]
    assert tags.count("oom") >= 1 and tags.count("traceback") == 1


def test_signature_tags_for_nccl_segfault_killed_nan() -> None:
    """Each documented signature is recognised on a typical line."""
    assert tags_of("[E ProcessGroupNCCL.cpp:475] Watchdog caught collective operation timeout: WorkNCCL(...)") == [
        "nccl_timeout"
    ]
    assert tags_of("torch.distributed.DistBackendError: NCCL error in: ../ProcessGroupNCCL.cpp:1269") == ["nccl_error"]
    assert tags_of("Fatal Python error: Segmentation fault") == ["segfault"]
    assert tags_of("Killed") == ["killed"]
    assert tags_of("step 10: loss is nan") == ["nan"]
    assert tags_of("number of nan iterations:     0 | lm loss: 2.9") == []


def test_interleaved_rank_tracebacks_are_grouped_per_rank(real_logs_dir: Path) -> None:
    """Rank-prefixed tracebacks of 8 ranks, interleaved, become one group per rank."""
    lines = _lines(real_logs_dir, "llamafactory_llama3.3_70b_sft_torchrun_8rank_crash.out")
    recs = _records(lines)
    LogEnricher().enrich("p", 0, 0, recs)  # type: ignore[arg-type]
    heads = [r for r in recs if "traceback" in r.get("tags", [])]  # type: ignore[operator]
    assert len(heads) >= 8
    groups = {r["group"] for r in recs if r.get("group")}
    assert len(groups) == len(heads)
    for group in groups:
        ranks = {r.get("rank") for r in recs if r.get("group") == group}
        assert len(ranks) == 1


def test_traceback_group_spans_batch_boundaries(real_logs_dir: Path) -> None:
    """A traceback cut between two batches of one producer keeps one group id."""
    lines = _lines(real_logs_dir, "nanogpt_torch_compile_cuda_oom_wandb_output.log")
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Traceback"))
    enricher = LogEnricher()
    first, second = _records(lines[: start + 5]), _records(lines[start + 5 :], start=0)
    enricher.enrich("p", 0, 0, first)  # type: ignore[arg-type]
    enricher.enrich("p", 1, 0, second)  # type: ignore[arg-type]
    end = next(i for i, r in enumerate(second) if str(r["line"]).startswith("torch.cuda.OutOfMemoryError"))
    assert first[start]["group"] == f"p/0/{start}"
    assert {r.get("group") for r in first[start:] + second[: end + 1]} == {first[start]["group"]}


def test_grouper_memory_is_bounded() -> None:
    """Open tracebacks beyond max_keys are forgotten, oldest first."""
    grouper = TracebackGrouper(max_keys=3)
    for producer in "abcdef":
        grouper.group_of(producer, 0, 0, 0, "Traceback (most recent call last):")
    assert grouper.open_groups() == 3


def test_metrics_from_hf_trainer_and_nanogpt_lines(real_logs_dir: Path) -> None:
    """HF Trainer dicts and nanoGPT ``iter N: loss X`` lines yield metric values with their step."""
    hf = next(
        ln
        for ln in _lines(real_logs_dir, "llamafactory_llama3.3_70b_sft_torchrun_8rank_crash.out")
        if "{'loss': 1.5071" in ln
    )
    got = extract(hf.split("\r")[-1])
    assert got is not None and got[1]["loss"] == 1.5071 and got[1]["epoch"] == 0.04
    assert extract("iter 10: loss 10.0507 BPC, time 263.86ms, mfu 9.31%") == (10, {"loss": 10.0507})
    assert extract("step=12 loss=nan lr=3e-4") is not None


def test_key_value_config_dump_is_not_a_metric() -> None:
    """A config line whose keys only mention loss in passing yields no metric."""
    assert extract("actor.kl_loss_coef=0.001 trainer.nnodes=1") is None


def test_nan_in_extracted_value_is_kept() -> None:
    """A NaN loss in a log line is extracted as NaN."""
    got = extract("step=12 loss=nan lr=3e-4")
    assert got is not None and got[0] == 12 and math.isnan(got[1]["loss"])


def test_process_emits_log_metrics_envelope_with_derived_identity() -> None:
    """Extracted metrics go out as a metrics envelope from producer~log with the log's seq and indexes."""
    env = wire.Envelope(
        kind="logs",
        producer="prod",
        seq=5,
        run="r1",
        node="n",
        rank=0,
        sent_ns=TS,
        records=[{"ts_ns": TS, "line": "hello"}, {"ts_ns": TS, "line": "iter 3: loss 2.5"}],
    )
    out = process(wire.encode(env), topic="t", partition=0, offset=0, limits=Limits(), ingest_ns=TS)
    assert out.metrics is not None
    derived = wire.decode(out.metrics)
    assert (derived.kind, derived.producer, derived.seq, derived.run) == ("metrics", "prod~log", 5, "r1")
    assert derived.records == [{"ts_ns": TS, "step": 3, "values": {"loss": 2.5}, "i": 1, "source": "log"}]


_NAN_REFERENCE = re.compile(
    r"(?:[:=]\s*['\"]?|\bis\s+)[-+]?(?:nan|NaN|NAN|inf|Inf)\b|NaN or Inf|\bnan loss\b|\bNaN loss\b"
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "is",
                " ",
                "\t",
                ":",
                "=",
                "'",
                "-",
                "+",
                "nan",
                "NaN",
                "NAN",
                "inf",
                "Inf",
                " loss",
                "loss",
                "NaN or Inf",
                "x",
                "_",
                "é",
                "1",
                ".",
            ]
        ),
        max_size=10,
    )
)
def test_nan_signature_equals_its_single_expression(parts: list[str]) -> None:
    """The split NaN/Inf search answers what the one documented expression answers."""
    text = "".join(parts)
    assert signatures._has_nan(text) == (_NAN_REFERENCE.search(text) is not None), text
