"""Query-string checking: every mistake is a QueryError that names the parameter."""

from __future__ import annotations

import pytest

from runstream.errors import QueryError
from ui.params import Params, check_run_id

NOW_NS = 1_800_000_000 * 1_000_000_000


def test_unknown_parameter_is_refused() -> None:
    """A misspelt parameter is an error naming it and the accepted ones."""
    with pytest.raises(QueryError, match=r"unknown parameter 'nmae'; accepted: name, points"):
        Params([("nmae", "loss")], {"name", "points"})


def test_repeated_parameter_is_refused() -> None:
    """A parameter given twice is an error rather than a silent pick."""
    with pytest.raises(QueryError, match="more than once"):
        Params([("name", "a"), ("name", "b")], {"name"})


def test_integer_default_when_absent_or_empty() -> None:
    """An absent or empty integer parameter takes its default."""
    params = Params([("points", "")], {"points", "limit"})
    assert params.integer("points", default=1000, low=2, high=10) == 1000
    assert params.integer("limit", default=None, low=1, high=10) is None


@pytest.mark.parametrize("value", ["1", "10001", "abc", "1.5", "1_000", "٣", "9" * 30])
def test_integer_out_of_range_or_malformed(value: str) -> None:
    """Only plain ASCII integers inside the range are accepted."""
    params = Params([("points", value)], {"points"})
    with pytest.raises(QueryError, match=r"points must be an integer from 2 to 10000"):
        params.integer("points", default=1000, low=2, high=10_000)


def test_choice_is_case_insensitive_and_canonical() -> None:
    """A choice matches regardless of case and comes back spelt as listed."""
    params = Params([("level", "warning")], {"level"})
    assert params.choice("level", ("INFO", "WARNING")) == "WARNING"


def test_choices_list() -> None:
    """A comma-separated list of choices comes back canonical, without repeats."""
    params = Params([("level", "error, Warning,ERROR")], {"level"})
    assert params.choices("level", ("INFO", "WARNING", "ERROR")) == ["ERROR", "WARNING"]


def test_choices_list_names_the_bad_item() -> None:
    """One unknown item in a list is an error naming that item."""
    with pytest.raises(QueryError, match="got 'LOUD'"):
        Params([("level", "INFO,LOUD")], {"level"}).choices("level", ("INFO", "WARNING"))


def test_choice_outside_the_list() -> None:
    """A value outside the choices is an error listing them."""
    with pytest.raises(QueryError, match="status must be one of running, finished"):
        Params([("status", "done")], {"status"}).choice("status", ("running", "finished"))


def test_time_forms() -> None:
    """since accepts RFC 3339, epoch seconds and a duration ago."""
    for text, expected in [
        ("2027-01-15T08:00:00Z", NOW_NS),
        ("1800000000", NOW_NS),
        ("1h", NOW_NS - 3600 * 10**9),
    ]:
        got = Params([("since", text)], {"since"}).time_ns("since", now_ns=NOW_NS)
        assert got == expected, text


def test_bad_time_names_the_parameter() -> None:
    """An unreadable time says which parameter and what forms are accepted."""
    with pytest.raises(QueryError, match=r"until: 'yesterday' is not a time: use RFC 3339"):
        Params([("until", "yesterday")], {"until"}).time_ns("until")


def test_since_after_until() -> None:
    """A range whose start is after its end is refused."""
    params = Params([("since", "1h"), ("until", "2h")], {"since", "until"})
    with pytest.raises(QueryError, match="since is after until"):
        params.time_range(now_ns=NOW_NS)


def test_text_limits() -> None:
    """Free text is bounded in length and may not carry NUL."""
    with pytest.raises(QueryError, match="longer than 1000"):
        Params([("q", "x" * 1001)], {"q"}).text("q")
    with pytest.raises(QueryError, match="NUL"):
        Params([("q", "a\x00b")], {"q"}).text("q")


@pytest.mark.parametrize("run_id", ["", "x" * 129, "a\nb"])
def test_run_id_shape(run_id: str) -> None:
    """Run ids are 1 to 128 printable characters."""
    with pytest.raises(QueryError, match="is not a run id"):
        check_run_id(run_id)
