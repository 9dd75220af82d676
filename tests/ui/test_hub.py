"""The feed's sans-I/O core: cursors, filters, the history/live hand-off and bounded queues."""

from __future__ import annotations

from typing import Any

import pytest

from ui.filters import FeedError, live_pattern, parse_filters, strip_ansi
from ui.hub import Client, Cursor, Hub, Rec


def rec(producer: str, seq: int, idx: int = 0, *, ts_us: int | None = None, sub: int = 0, **data: Any) -> Rec:
    return Rec((producer, seq, idx, sub), ts_us if ts_us is not None else seq * 10 + idx, data or {"line": f"{seq}"})


def subscribe(hub: Hub, client: Client, stream: str = "logs", sub: str = "s", **extra: Any) -> Any:
    return hub.subscribe(client, {"sub": sub, "run": "r1", "stream": stream, **extra}, lambda r: r)


def items(frames: list[dict[str, Any]]) -> list[Any]:
    return [i for f in frames if f.get("items") for i in f["items"]]


def test_cursor_round_trips_through_its_text() -> None:
    """A cursor decoded from its text has the same marks."""
    c = Cursor()
    c.advance(rec("a", 3, 1))
    c.advance(rec("b", 7))
    assert Cursor.decode(c.encode()).marks == c.marks


def test_cursor_marks_only_move_up() -> None:
    """An older record never lowers a producer's mark; seen() follows (seq, idx, sub) order."""
    c = Cursor()
    c.advance(rec("a", 5, 2))
    c.advance(rec("a", 4, 9))
    assert c.seen(("a", 5, 2, 0)) and c.seen(("a", 4, 9, 0))
    assert not c.seen(("a", 5, 3, 0)) and not c.seen(("b", 0, 0, 0))


def test_cursor_floor_round_trips_and_wins_when_later_than_the_oldest_mark() -> None:
    """A cursor's floor survives its text and moves the resume point past an old mark, never before it."""
    c = Cursor()
    c.advance(rec("a", 1, ts_us=1_000))
    c.advance(rec("b", 9, ts_us=90_000))
    assert c.since_us(500) == 500
    c.floor_us = 50_000
    again = Cursor.decode(c.encode())
    assert again.floor_us == 50_000 and again.since_us(500) == 50_000
    again.floor_us = 100
    assert again.since_us(500) == 500


@pytest.mark.parametrize("text", ["not base64!", "e30", "eyJ2IjoxLCJwIjp7ImEiOlsxXX19"])
def test_malformed_cursor_is_refused(text: str) -> None:
    """A cursor that is not one this server wrote raises FeedError."""
    with pytest.raises(FeedError):
        Cursor.decode(text)


def test_history_then_buffered_records_without_duplicates() -> None:
    """Buffered live records already in the history are skipped; the others follow it."""
    hub, client = Hub(), Client(lambda: None)
    sub = subscribe(hub, client)
    hub.publish("r1", "logs", [rec("p", 2), rec("p", 3)])
    hub.complete_history(sub, [rec("p", 1), rec("p", 2)], None)
    hub.publish("r1", "logs", [rec("p", 4)])
    frames = client.take_frames()
    assert [f["type"] for f in frames] == ["history", "live"]
    assert items(frames) == [{"line": "1"}, {"line": "2"}, {"line": "3"}, {"line": "4"}]


def test_seeded_recent_records_close_the_gap_before_subscribing() -> None:
    """A record seen live before the subscription but not yet stored still reaches the client."""
    hub, client = Hub(), Client(lambda: None)
    sub = subscribe(hub, client)
    hub.seed(sub, [rec("p", 1), rec("p", 2)])
    hub.complete_history(sub, [rec("p", 1)], None)
    assert items(client.take_frames()) == [{"line": "1"}, {"line": "2"}]


def test_recent_window_records_older_than_a_cut_history_are_left_out() -> None:
    """When the history is the newest N, recent-window records before its first are outside the window."""
    hub, client = Hub(), Client(lambda: None)
    sub = subscribe(hub, client)
    hub.seed(sub, [rec("p", 1), rec("p", 5)])
    first = rec("p", 3)
    hub.complete_history(sub, [first, rec("p", 4)], first.key, first.ts_us)
    assert items(client.take_frames()) == [{"line": "3"}, {"line": "4"}, {"line": "5"}]


def test_records_arriving_while_a_cut_history_is_read_are_all_delivered() -> None:
    """Lines that arrive after subscribing reach the client even when the sink stored them and the limit cut them."""
    hub, client = Hub(), Client(lambda: None)
    sub = subscribe(hub, client, filters={"limit": 1})
    hub.seed(sub, [rec("p", 0)])
    hub.publish("r1", "logs", [rec("p", n) for n in range(1, 8)])
    newest_stored = rec("p", 5)  # the history was read after the sink stored 1..5; its limit kept the newest
    hub.complete_history(sub, [newest_stored], newest_stored.key, newest_stored.ts_us)
    hub.publish("r1", "logs", [rec("p", 8)])
    assert [i["line"] for i in items(client.take_frames())] == [str(n) for n in range(1, 9)]


def test_many_subscriptions_racing_the_hand_off_miss_no_line() -> None:
    """A hundred clients subscribing while lines flow, histories read late and cut to one, each get every later line."""
    hub = Hub()
    lines = [rec("p", n) for n in range(400)]
    sink_lag, clients = 3, []
    answers: dict[int, list[Any]] = {}
    for n, line in enumerate(lines):
        hub.publish("r1", "logs", [line])
        stored = lines[: max(0, n + 1 - sink_lag)]
        for sub in answers.pop(n, []):  # one read lane: histories answered one by one, late
            newest = stored[-1:]
            hub.complete_history(sub, newest, newest[0].key if newest else None, newest[0].ts_us if newest else None)
        if n < 100:
            client = Client(lambda: None)
            sub = subscribe(hub, client, filters={"limit": 1})
            hub.seed(sub, lines[max(0, n - 20) : n + 1])  # the live source's recent window
            answers.setdefault(n + 1 + (n * 7) % 60, []).append(sub)
            clients.append((n, client))
    for n, client in clients:
        got = [int(i["line"]) for i in items(client.take_frames())]
        # No gap, no duplicate, in order, from at most the subscription on, up to the newest line.
        assert got == list(range(got[0], len(lines))) and got[0] <= n + 1, (n, got[:5])


def test_resume_skips_what_the_cursor_has() -> None:
    """A subscription with a cursor gets only records above its marks, and new producers' records."""
    have = Cursor()
    have.advance(rec("p", 2))
    hub, client = Hub(), Client(lambda: None)
    sub = subscribe(hub, client, cursor=have.encode())
    hub.complete_history(sub, [rec("p", 1), rec("p", 2), rec("q", 0), rec("p", 3)], None)
    assert items(client.take_frames()) == [{"line": "0"}, {"line": "3"}]


def test_frame_cursor_resumes_after_its_items() -> None:
    """Resuming from a frame's cursor repeats nothing that frame carried."""
    hub, client = Hub(), Client(lambda: None)
    sub = subscribe(hub, client)
    hub.complete_history(sub, [rec("p", 1)], None)
    hub.publish("r1", "logs", [rec("p", 2)])
    cursor = client.take_frames()[-1]["cursor"]
    assert Cursor.decode(cursor).seen(("p", 2, 0, 0)) and not Cursor.decode(cursor).seen(("p", 3, 0, 0))


def test_slow_log_client_gets_a_drop_marker_and_its_subscription_ends() -> None:
    """Over the queue bound, a logs subscription ends with `dropped` and a cursor at the last sent record."""
    hub, client = Hub(), Client(lambda: None, max_pending_items=3)
    sub = subscribe(hub, client)
    hub.complete_history(sub, [], None)
    hub.publish("r1", "logs", [rec("p", n) for n in range(1, 6)])
    hub.publish("r1", "logs", [rec("p", 6)])
    frames = client.take_frames()
    assert items(frames) == [{"line": "1"}, {"line": "2"}, {"line": "3"}]
    assert frames[-1]["type"] == "dropped" and frames[-1]["count"] == 2
    assert Cursor.decode(frames[-1]["cursor"]).marks["p"][:3] == (3, 0, 0)
    assert client.subs == {} and hub.subscriptions() == 0


def test_one_slow_client_does_not_hold_back_another() -> None:
    """A client that overflowed leaves other clients of the same run receiving everything."""
    hub = Hub()
    slow, fast = Client(lambda: None, max_pending_items=2), Client(lambda: None)
    for c in (slow, fast):
        hub.complete_history(subscribe(hub, c), [], None)
    for n in range(10):
        hub.publish("r1", "logs", [rec("p", n)])
    assert len(items(fast.take_frames())) == 10
    assert slow.take_frames()[-1]["type"] == "dropped"
    hub.publish("r1", "logs", [rec("p", 10)])
    assert items(fast.take_frames()) == [{"line": "10"}]


def test_slow_metrics_client_is_coalesced_to_the_newest_value_per_series() -> None:
    """Over the bound, metrics keep the newest point of each series and count the rest."""
    hub, client = Hub(), Client(lambda: None, max_pending_items=2)
    sub = subscribe(hub, client, stream="metrics")
    hub.complete_history(sub, [], None)
    client.take_frames()
    hub.publish("r1", "metrics", [rec("p", n, name="loss" if n % 2 else "acc", v=n) for n in range(6)])
    frames = client.take_frames()
    assert items(frames) == [{"name": "acc", "v": 4}, {"name": "loss", "v": 5}]
    assert frames[-1]["coalesced"] == 4


def test_log_filters_apply_to_live_records() -> None:
    """q matches text without ANSI codes case-insensitively; level, node and rank filter exactly."""
    hub, client = Hub(), Client(lambda: None)
    sub = subscribe(hub, client, filters={"q": "Out Of", "level": "ERROR,CRITICAL", "rank": 1})
    hub.complete_history(sub, [], None)
    lines = [
        rec("p", 1, line="CUDA \x1b[31mout of\x1b[0m memory", level="ERROR", rank=1),
        rec("p", 2, line="CUDA out of memory", level="INFO", rank=1),
        rec("p", 3, line="CUDA out of memory", level="ERROR", rank=0),
        rec("p", 4, line="all fine", level="ERROR", rank=1),
    ]
    hub.publish("r1", "logs", lines)
    assert [i["line"] for i in items(client.take_frames())] == ["CUDA \x1b[31mout of\x1b[0m memory"]


@pytest.mark.parametrize(
    "filters",
    [
        {"regex": "("},
        {"level": "LOUD"},
        {"rank": -1},
        {"nope": 1},
        {"limit": 10**6},
        {"since": "soon"},
        {"since": []},
        "x",
    ],
)
def test_bad_filters_are_refused(filters: Any) -> None:
    """A malformed filter raises FeedError naming it."""
    with pytest.raises(FeedError):
        parse_filters("logs", filters)


def test_a_since_filter_selects_lines_from_then_on_live_as_in_history() -> None:
    """``since`` (RFC 3339, epoch seconds or a duration ago) lets through only live lines from that time on."""
    f = parse_filters("logs", {"since": "2026-11-23T10:00:00Z"})
    assert f.since_us == 1_795_428_000_000_000
    assert parse_filters("logs", {"since": 1795428000}).since_us == f.since_us
    hub, client = Hub(), Client(lambda: None)
    sub = subscribe(hub, client, filters={"since": "2026-11-23T10:00:00Z"})
    hub.complete_history(sub, [], None)
    hub.publish(
        "r1", "logs", [rec("p", 1, ts_us=f.since_us - 1, line="before"), rec("p", 2, ts_us=f.since_us, line="at")]
    )
    assert [i["line"] for i in items(client.take_frames())] == ["at"]
    with pytest.raises(FeedError):
        parse_filters("metrics", {"since": "1h"})  # only log subscriptions take a time range


def test_a_subscription_id_cannot_be_reused_while_active() -> None:
    """Subscribing twice with one id is refused; after unsubscribe it is free again."""
    hub, client = Hub(), Client(lambda: None)
    subscribe(hub, client)
    with pytest.raises(FeedError):
        subscribe(hub, client)
    assert hub.unsubscribe(client, "s")
    subscribe(hub, client)


def test_strip_ansi_removes_colour_and_hyperlink_sequences() -> None:
    """Colour (CSI) and hyperlink (OSC) sequences go; the text stays."""
    assert strip_ansi("\x1b[1;32mok\x1b[0m \x1b]8;;http://x\x07link\x1b]8;;\x07") == "ok link"


def test_live_copy_of_a_record_the_history_held_is_skipped() -> None:
    """A record read live after the sink stored it (so the history held it) is not sent twice."""
    hub, client = Hub(), Client(lambda: None)
    sub = subscribe(hub, client)
    hub.complete_history(sub, [rec("p", 1), rec("p", 2), rec("q", 5)], None)
    hub.publish("r1", "logs", [rec("p", 2), rec("q", 5), rec("p", 3), rec("q", 6)])
    hub.publish("r1", "logs", [rec("p", 3), rec("p", 4)])
    frames = client.take_frames()
    assert items(frames) == [{"line": "1"}, {"line": "2"}, {"line": "5"}, {"line": "3"}, {"line": "6"}, {"line": "4"}]


def test_late_live_record_below_the_mark_is_still_delivered() -> None:
    """A record that comes live out of order (not in the history, not sent yet) is delivered, not dropped."""
    hub, client = Hub(), Client(lambda: None)
    sub = subscribe(hub, client)
    hub.complete_history(sub, [rec("p", 1)], None)
    hub.publish("r1", "logs", [rec("p", 3)])
    hub.publish("r1", "logs", [rec("p", 2), rec("p", 3)])
    frames = client.take_frames()
    assert items(frames) == [{"line": "1"}, {"line": "3"}, {"line": "2"}]


@pytest.mark.parametrize(
    ("regex", "line", "matches"),
    [
        ("[[:digit:]]+ it/s", "37 it/s", True),
        ("[[:digit:]]+ it/s", ":] it/s", False),
        ("[[:alpha:]_]+=", "train_loss=0.5", True),
        ("[[:punct:]]", "a]b", True),
        ("[[:space:]]x", "a x", True),
        ("[][]", "a]", True),
        ("[a[]", "x[", True),
        ("\\bloss", "éloss", True),
        ("\\d", "٣", False),
        ("[:digit:]", "t", True),
    ],
)
def test_live_regex_matches_as_re2_does(regex: str, line: str, matches: bool) -> None:
    """A live regex filter keeps the RE2 meaning of POSIX classes, brackets and ASCII classes (the history's)."""
    assert (live_pattern(regex).search(line) is not None) is matches


def test_negated_posix_class_is_refused() -> None:
    """A negated POSIX class, which the live filter cannot mirror, raises FeedError instead of matching differently."""
    with pytest.raises(FeedError):
        parse_filters("logs", {"regex": "[[:^digit:]]"})
