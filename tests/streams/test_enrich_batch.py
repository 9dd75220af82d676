"""The batch prefilters of streams.enrich change no result of the per-line functions."""

from __future__ import annotations

from pathlib import Path

from streams import extract, levels, signatures
from streams.enrich import LogEnricher, candidates


def _corpus(real_logs_dir: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(real_logs_dir.rglob("*")):
        if path.is_file():
            lines += [line for line in path.read_text(errors="replace").split("\n") if line]
    return lines


def test_batch_enrichment_equals_per_line_functions_on_real_logs(real_logs_dir: Path) -> None:
    """Level, tags, rank and extracted metrics equal the per-line functions on every real log line."""
    lines = _corpus(real_logs_dir)
    records = [{"ts_ns": i, "line": line, "stream": "stdout", "level": "", "logger": "", "i": i % 1000}
               for i, line in enumerate(lines)]
    enricher = LogEnricher()
    metrics = []
    for off in range(0, len(records), 1000):
        metrics += enricher.enrich("p", off // 1000, 0, records[off:off + 1000])
    expected_metrics = []
    for rec in records:
        text, rank = levels.strip_decorations(rec["line"])
        assert rec["level"] == levels.detect(text), rec["line"][:200]
        assert rec.get("tags", []) == signatures.tags_of(text), rec["line"][:200]
        assert rec.get("rank") == rank
        found = extract.extract(text)
        if found is not None:
            expected_metrics.append((rec["ts_ns"], found[0], repr(found[1])))
    assert [(m["ts_ns"], m["step"], repr(m["values"])) for m in metrics] == expected_metrics  # repr: NaN
    assert len(expected_metrics) > 100


def test_candidates_finds_hints_at_line_starts_and_inside_lines() -> None:
    """A hint inside a line or a newline-anchored hint at a line's start marks exactly that line."""
    texts = ["plain", "has loss=1", "I1212 12:00:00 glog", "x I1212 not at start", "", "step"]
    joined = "\n" + "\n".join(texts)
    starts = [1]
    for t in texts[:-1]:
        starts.append(starts[-1] + len(t) + 1)
    assert candidates(("loss", "step"), joined, starts) == [1, 5]
    assert candidates(("\nI",), joined, starts) == [2]
