"""Evaluation helpers against brute-force computations, their input checks, and the broker (producers.evals)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sdk_support import read_envelopes, scaled, valid_records

import runstream
from producers import evals
from producers.options import Options
from runstream import settings as settings_mod
from runstream.topics import Topics

SEEDS = range(8)


def brute_confusion(t: list[int], p: list[int], n: int) -> list[list[int]]:
    m = [[0] * n for _ in range(n)]
    for a, b in zip(t, p, strict=True):
        m[a][b] += 1
    return m


def brute_pr(t: list[int], scores: list[float], k: int, thr: float) -> tuple[float, float, float]:
    tp = sum(1 for y, s in zip(t, scores, strict=True) if s >= thr and y == k)
    fp = sum(1 for y, s in zip(t, scores, strict=True) if s >= thr and y != k)
    pos = sum(1 for y in t if y == k)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / pos if pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_matches_counting(seed: int) -> None:
    """Every cell equals the brute-force count of (true, predicted) pairs; per-label P/R/F1 follow."""
    rng = np.random.default_rng(seed)
    n_labels = int(rng.integers(2, 7))
    n = int(rng.integers(1, 300))
    t, p = rng.integers(0, n_labels, n), rng.integers(0, n_labels, n)
    labels = [f"c{i}" for i in range(n_labels)]
    data = evals.confusion_matrix(t, p, labels)
    m = brute_confusion(t.tolist(), p.tolist(), n_labels)
    assert data["labels"] == labels and data["matrix"] == m and data["total"] == n
    for k in range(n_labels):
        predicted, actual = sum(m[i][k] for i in range(n_labels)), sum(m[k])
        precision = m[k][k] / predicted if predicted else 0.0
        recall = m[k][k] / actual if actual else 0.0
        assert data["per_label"]["precision"][k] == pytest.approx(precision)
        assert data["per_label"]["recall"][k] == pytest.approx(recall)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert data["per_label"]["f1"][k] == pytest.approx(f1)
        assert data["per_label"]["support"][k] == actual
    assert data["accuracy"] == pytest.approx(sum(m[k][k] for k in range(n_labels)) / n)


def test_confusion_matrix_takes_label_values() -> None:
    """y_true/y_pred given as label values (text, or ints when labels are ints) land in their cells."""
    text = evals.confusion_matrix(["dog", "cat", "dog"], ["dog", "dog", "cat"], ["cat", "dog"])
    assert text["matrix"] == [[0, 1], [1, 1]]
    ints = evals.confusion_matrix([3, 7, 7], [7, 7, 3], [7, 3])
    assert ints["labels"] == ["7", "3"] and ints["matrix"] == [[1, 1], [1, 0]]


@pytest.mark.parametrize("seed", SEEDS)
def test_pr_curve_matches_brute_force_per_label(seed: int) -> None:
    """Precision, recall and F1 at each threshold equal brute-force one-vs-rest counts."""
    rng = np.random.default_rng(seed)
    n_labels = int(rng.integers(2, 5))
    n = int(rng.integers(1, 120))
    t = rng.integers(0, n_labels, n)
    # Rounded scores put samples exactly on thresholds (>= must count them).
    scores = np.round(rng.random((n, n_labels)), 1)
    labels = [f"l{i}" for i in range(n_labels)]
    data = evals.pr_curve(t, scores, labels, thresholds=11)
    assert data["labels"] == labels
    assert data["thresholds"] == pytest.approx([i / 10 for i in range(11)])
    for k, curve in enumerate(data["curves"]):
        assert curve["label"] == labels[k] and curve["support"] == int((t == k).sum())
        for j, thr in enumerate(data["thresholds"]):
            expected = brute_pr(t.tolist(), scores[:, k].tolist(), k, thr)
            got = (curve["precision"][j], curve["recall"][j], curve["f1"][j])
            assert got == pytest.approx(expected)


def test_pr_curve_binary_scores_give_one_curve_for_the_second_label() -> None:
    """A one-dimensional y_score is the score of labels[1], which alone gets a curve."""
    t = [0, 1, 1, 0, 1]
    s = [0.1, 0.9, 0.4, 0.6, 0.8]
    data = evals.pr_curve(t, s, ["neg", "pos"], thresholds=[0.5, 0.0, 0.85])
    assert data["thresholds"] == [0.0, 0.5, 0.85]
    (curve,) = data["curves"]
    assert curve["label"] == "pos"
    assert curve["precision"] == pytest.approx([brute_pr(t, s, 1, x)[0] for x in (0.0, 0.5, 0.85)])
    assert curve["recall"] == pytest.approx([1.0, 2 / 3, 1 / 3])


def test_average_precision_is_the_step_sum_over_thresholds() -> None:
    """average_precision = sum((R[k] - R[k+1]) * P[k]) over the thresholds, R after the last = 0."""
    rng = np.random.default_rng(42)
    t = rng.integers(0, 2, 200)
    s = rng.random(200)
    curve = evals.pr_curve(t, s, ["a", "b"], thresholds=21)["curves"][0]
    r, p = curve["recall"] + [0.0], curve["precision"]
    assert curve["average_precision"] == pytest.approx(sum((r[k] - r[k + 1]) * p[k] for k in range(21)))


def test_table_row_and_list_keep_their_cells() -> None:
    """table, row and list data hold the given cells as plain numbers, text, bools and nulls."""
    table = evals.table(["epoch", "acc", "note"], [[1, np.float32(0.5), "ok"], [2, 0.75, None]])
    assert table == {"columns": ["epoch", "acc", "note"], "rows": [[1, 0.5, "ok"], [2, 0.75, None]]}
    assert evals.row({"epoch": np.int64(3), "best": True}) == {"values": {"epoch": 3, "best": True}}
    listed = evals.list_values(np.array([1.5, 2.0, math.nan]))["values"]
    assert listed[:2] == [1.5, 2.0] and math.isnan(listed[2])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: evals.confusion_matrix([0, 1], [0], ["a", "b"]), "differ in length"),
        (lambda: evals.confusion_matrix([0, 2], [0, 1], ["a", "b"]), "position 2"),
        (lambda: evals.confusion_matrix(["a", "x"], ["a", "b"], ["a", "b"]), "'x'"),
        (lambda: evals.confusion_matrix([0], [0], ["a"]), "at least two"),
        (lambda: evals.confusion_matrix([0], [0], ["a", "a"]), "twice"),
        (lambda: evals.confusion_matrix([], [], ["a", "b"]), "empty"),
        (lambda: evals.confusion_matrix([0], [0], [str(i) for i in range(201)]), "at most 200 labels"),
        (lambda: evals.pr_curve([0, 1], [[0.1, math.nan], [0.2, 0.3]], ["a", "b"]), "finite"),
        (lambda: evals.pr_curve([0, 1], [0.1, 0.2], ["a", "b", "c"]), "exactly two"),
        (lambda: evals.pr_curve([0, 1], [[0.1, 0.2]], ["a", "b"]), "rows"),
        (lambda: evals.pr_curve([0, 1], [0.1, 0.2], ["a", "b"], thresholds=1), "between 2"),
        (lambda: evals.pr_curve([0], [[0.5] * 200], [str(i) for i in range(200)], thresholds=101), "at most 20000"),
        (lambda: evals.table(["a", "b"], [[1, 2], [3]]), "row 1"),
        (lambda: evals.table(["a", "a"], []), "distinct"),
        (lambda: evals.table(["a"], [[object()]]), "not a number"),
        (lambda: evals.table(["a"], [["x" * 300_000]]), "longer than 4096"),
        (lambda: evals.table(["a"], [["x" * 4000]] * 200), "bytes encoded, more than 524288"),
        (lambda: evals.row({}), "at least one"),
        (lambda: evals.list_values(["a", "b"]), "numbers"),
        (lambda: evals.list_values([[1, 2]]), "one-dimensional"),
        (lambda: evals.check_name(""), "non-empty"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call: Any, message: str) -> None:
    """Malformed or oversized input raises ValueError naming the problem."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        call()


def test_run_methods_raise_for_bad_input_and_buffer_nothing(tmp_path: Path) -> None:
    """A Run's log_* raise ValueError for bad input and put no evals record in the buffer."""
    settings = settings_mod.load({"kafka": "127.0.0.1:9", "data_dir": str(tmp_path)}, environ={})
    run = runstream.init(
        project="evals",
        settings=settings,
        capture=False,
        options=Options(sample=False, spool=False, finish_timeout_s=0.05),
    )
    try:
        with pytest.raises(ValueError, match="name"):
            run.log_list("", [1.0])
        with pytest.raises(ValueError, match="differ in length"):
            run.log_confusion_matrix([0, 1], [1], ["a", "b"])
        assert run.stats()["enqueued"]["evals"] == 0
    finally:
        run.finish()


def test_run_sends_every_eval_kind_to_the_broker(sdk_broker: str, sdk_topics: Topics, tmp_path: Path) -> None:
    """log_confusion_matrix, log_pr_curve, log_table, log_row and log_list arrive as valid evals records."""
    settings = settings_mod.load(
        {"kafka": sdk_broker, "topic_prefix": sdk_topics.prefix, "data_dir": str(tmp_path)}, environ={}
    )
    rng = np.random.default_rng(7)
    t, scores = rng.integers(0, 3, 50), rng.random((50, 3))
    labels = ["a", "b", "c"]
    run = runstream.init(project="evals", settings=settings, capture=False, options=Options(sample=False))
    try:
        assert run.log_confusion_matrix(t, scores.argmax(axis=1), labels)
        assert run.log_pr_curve(t, scores, labels, name="val/pr", thresholds=5)
        assert run.log_table("per_epoch", ["epoch", "acc"], [[1, 0.5], [2, 0.7]])
        assert run.log_row("best", epoch=2, acc=0.7)
        assert run.log_list("lrs", [0.1, 0.01])
    finally:
        assert run.finish() is True
    found = asyncio.run(
        read_envelopes(
            sdk_broker, sdk_topics, ("evals",), lambda f: sum(len(e.records) for e in f["evals"]) >= 5, scaled(20)
        )
    )
    records = valid_records(found["evals"])
    assert [(r["name"], r["type"]) for r in records] == [
        ("confusion_matrix", "confusion_matrix"),
        ("val/pr", "pr_curve"),
        ("per_epoch", "table"),
        ("best", "row"),
        ("lrs", "list"),
    ]
    assert records[0]["data"] == evals.confusion_matrix(t, scores.argmax(axis=1), labels)
    assert records[1]["data"] == evals.pr_curve(t, scores, labels, thresholds=5)
    assert records[3]["data"] == {"values": {"epoch": 2, "acc": 0.7}}


def test_init_leaves_numpy_unimported_until_the_first_eval(tmp_path: Path) -> None:
    """A run that logs no eval does not pay numpy's import at init; the first eval imports it and works."""
    from sdk_support import run_script

    code = (
        "import sys, socket, runstream\n"
        "from producers.options import Options\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "run = runstream.init(project='unit', kafka=f'127.0.0.1:{port}', capture=False,\n"
        "                      options=Options(spool=False, finish_timeout_s=0.05))\n"
        "print('numpy' in sys.modules)\n"
        "run.log_table('t', ['a'], [[1]])\n"
        "print('numpy' in sys.modules)\n"
        "run.finish()\n"
    )
    proc = run_script(code, {"RUNSTREAM_DATA_DIR": str(tmp_path)}, scaled(30))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]
