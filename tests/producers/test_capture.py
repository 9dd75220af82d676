"""Console and logging capture (producers.capture)."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import TextIO

from producers.capture import Capture, LineAssembler, emit_traceback

Line = tuple[int, str, str, str, str]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def consoles() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Fresh stand-ins for the real stdout/stderr (set in the test body: pytest resets them
    between phases)."""
    out, err = FakeTTY(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        sys.stdout, sys.stderr = saved


@contextlib.contextmanager
def capturing() -> Iterator[tuple[list[Line], io.StringIO, io.StringIO]]:
    """Capture installed over fresh consoles; yields the captured lines and the consoles."""
    lines: list[Line] = []
    with consoles() as (out, err):
        cap = Capture(lambda *rec: lines.append(rec), max_line_chars=4096)
        cap.install()
        try:
            yield lines, out, err
        finally:
            cap.uninstall()


def texts(lines: list[Line], stream: str | None = None) -> list[str]:
    return [line for _, line, s, _, _ in lines if stream is None or s == stream]


def test_lines_split_on_newlines() -> None:
    """One write with several newlines gives one line each, the rest waits."""
    asm = LineAssembler()
    assert asm.feed("a\nb\n\nc") == ["a", "b", ""]
    assert asm.feed("d\n") == ["cd"]


def test_partial_writes_join_into_one_line() -> None:
    """Writes without a newline are held until it comes."""
    asm = LineAssembler()
    assert asm.feed("epoch ") == []
    assert asm.feed("3 ") == []
    assert asm.feed("done\n") == ["epoch 3 done"]


def test_carriage_returns_collapse_to_last_state() -> None:
    """A progress bar redrawn with \\r becomes its final state."""
    asm = LineAssembler()
    assert asm.feed("\r 10%|#   |") == []
    assert asm.feed("\r 50%|##  |   ") == []
    assert asm.feed("\r100%|####|\n") == ["100%|####|"]


def test_carriage_return_cleared_line_keeps_last_nonblank_state() -> None:
    """A bar cleared with spaces before the newline keeps its last drawn state."""
    asm = LineAssembler()
    assert asm.feed("\r 99%|### |\r          \r\n") == [" 99%|### |"]


def test_crlf_line_ending_is_one_line() -> None:
    """Windows line endings give the text without the carriage return."""
    assert LineAssembler().feed("hello\r\nworld\r\n") == ["hello", "world"]


def test_overlong_partial_line_is_emitted_in_pieces() -> None:
    """A line without newline beyond the bound is emitted, bounded, in pieces."""
    asm = LineAssembler(max_line_chars=10)
    assert asm.feed("x" * 25) == ["x" * 10, "x" * 10]
    assert asm.flush() == "x" * 5


def test_flush_returns_trailing_partial_line_once() -> None:
    """flush() gives the unterminated line, then nothing."""
    asm = LineAssembler()
    asm.feed("last words")
    assert asm.flush() == "last words"
    assert asm.flush() is None


def test_terminal_receives_writes_unchanged() -> None:
    """Everything printed reaches the real stream byte for byte, colours included."""
    with capturing() as (_, out, err):
        print("\x1b[31mred\x1b[0m", end="")
        print(" and more\r\nnext")
        sys.stderr.write("partial")
        assert sys.stdout.isatty() is True
    assert out.getvalue() == "\x1b[31mred\x1b[0m and more\r\nnext\n"
    assert err.getvalue() == "partial"


def test_stdout_and_stderr_lines_are_captured_with_their_stream() -> None:
    """Complete lines become records tagged stdout or stderr, level empty."""
    with capturing() as (lines, _, _):
        print("to out")
        print("to err", file=sys.stderr)
    got = [(line, s, lvl) for _, line, s, lvl, _ in lines]
    assert got == [("to out", "stdout", ""), ("to err", "stderr", "")]


def test_writes_become_lines_only_when_pumped() -> None:
    """A write only queues on the caller's thread; pump() emits the lines it completed."""
    lines: list[Line] = []
    with consoles():
        cap = Capture(lambda *rec: lines.append(rec))
        cap.install()
        try:
            print("first")
            sys.stdout.write("second, partial")
            assert lines == []
            cap.pump()
            assert texts(lines) == ["first"]
            print(" end")
            cap.pump()
            assert texts(lines) == ["first", "second, partial end"]
        finally:
            cap.uninstall()


def test_line_time_is_the_time_of_the_write_that_ended_it() -> None:
    """A line pumped later keeps the time of the write that ended it, not the pump's."""
    lines: list[Line] = []
    with consoles():
        cap = Capture(lambda *rec: lines.append(rec))
        cap.install()
        try:
            before = time.time_ns()
            print("stamped")
            after = time.time_ns()
            time.sleep(0.05)
            cap.pump()
        finally:
            cap.uninstall()
    assert before <= lines[0][0] <= after


def test_every_line_of_a_multi_line_write_has_that_write_time() -> None:
    """Lines ended by one write carry its time; a later write's lines are not earlier."""
    with capturing() as (lines, _, _):
        before = time.time_ns()
        sys.stdout.write("a\nb\nc")
        middle = time.time_ns()
        sys.stdout.write("\n")
        after = time.time_ns()
        Capture._installed.pump()  # type: ignore[union-attr]
    assert texts(lines) == ["a", "b", "c"]
    assert before <= lines[0][0] == lines[1][0] <= middle <= lines[2][0] <= after


def test_progress_bar_line_has_the_time_of_its_newline() -> None:
    """A line redrawn with carriage returns is stamped by the write that ended it, not by its redraws."""
    with capturing() as (lines, _, _):
        for i in range(3):
            sys.stdout.write(f"\rstep {i}")
        before = time.time_ns()
        sys.stdout.write("\n")
        after = time.time_ns()
        Capture._installed.pump()  # type: ignore[union-attr]
    assert texts(lines) == ["step 2"]
    assert before <= lines[0][0] <= after


def test_piece_of_an_overlong_line_is_stamped_between_its_write_and_the_pump() -> None:
    """A piece cut from a line with no newline yet gets a time no earlier than its write, no later than the pump."""
    lines: list[Line] = []
    with consoles():
        cap = Capture(lambda *rec: lines.append(rec), max_line_chars=10)
        cap.install()
        try:
            before = time.time_ns()
            sys.stdout.write("x" * 25)
            cap.pump()
            after = time.time_ns()
        finally:
            cap.uninstall()
    assert texts(lines) == ["x" * 10, "x" * 10, "x" * 5]
    assert all(before <= ts <= after for ts, *_ in lines[:2])


def test_pump_hands_many_lines_over_as_columns_of_one_stream() -> None:
    """With emit_many, a pump hands over each stream's lines and their times at once."""
    got: list[tuple[list[int], list[str], str]] = []
    with consoles():
        cap = Capture(lambda *rec: None, emit_many=lambda times, lines, stream: got.append((times, lines, stream)))
        cap.install()
        try:
            print("one")
            print("two", file=sys.stderr)
            print("three")
            cap.pump()
        finally:
            cap.uninstall()
    by_stream = {stream: (times, lines) for times, lines, stream in got}
    assert by_stream["stdout"][1] == ["one", "three"]
    assert by_stream["stderr"][1] == ["two"]
    assert len(by_stream["stdout"][0]) == 2 and by_stream["stdout"][0] == sorted(by_stream["stdout"][0])


def test_write_of_something_not_text_is_captured_as_its_str() -> None:
    """A stream that takes any object passes it through; the capture keeps its str() and never raises."""

    class Anything(io.StringIO):
        def write(self, obj: object) -> int:
            return super().write(str(obj))

    lines: list[Line] = []
    with consoles():
        sys.stdout = Anything()
        cap = Capture(lambda *rec: lines.append(rec))
        cap.install()
        try:
            sys.stdout.write(b"raw\n")  # type: ignore[arg-type]
            sys.stdout.write(["a\n"])  # type: ignore[arg-type]
            sys.stdout.write(42)  # type: ignore[arg-type]
            before = time.time_ns()
            sys.stdout.write("\n")
        finally:
            cap.uninstall()
    assert texts(lines) == ["b'raw\\n'['a\\n']42"]
    assert lines[0][0] >= before


def test_full_write_queue_counts_the_lines_it_could_not_capture() -> None:
    """Past max_pending_writes, writes still reach the terminal and each lost line is counted once."""
    lines: list[Line] = []
    dropped: list[int] = []
    with consoles() as (out, _):
        cap = Capture(lambda *rec: lines.append(rec), max_pending_writes=4, on_drop=dropped.append)
        cap.install()
        try:
            for i in range(5):  # print writes the text and the newline separately
                print(f"line {i}")
            cap.pump()
            print("after")
        finally:
            cap.uninstall()
        assert out.getvalue() == "".join(f"line {i}\n" for i in range(5)) + "after\n"
    assert texts(lines) == ["line 0", "line 1", "after"]
    assert sum(dropped) == 3


def test_lines_from_many_threads_are_all_captured_whole() -> None:
    """Whole lines written at once by several threads are each captured exactly once."""
    lines: list[Line] = []
    with consoles():
        cap = Capture(lambda *rec: lines.append(rec))
        cap.install()
        pumping = threading.Event()

        def pump_forever() -> None:
            while not pumping.is_set():
                cap.pump()

        pumper = threading.Thread(target=pump_forever)
        pumper.start()
        try:

            def writer(t: int) -> None:
                for i in range(2000):
                    sys.stdout.write(f"t{t} {i}\n")

            threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        finally:
            pumping.set()
            pumper.join()
            cap.uninstall()
    assert sorted(texts(lines)) == sorted(f"t{t} {i}" for t in range(4) for i in range(2000))


def test_uninstall_emits_partial_line_and_restores_streams() -> None:
    """Uninstalling emits the trailing partial line and puts the real streams back."""
    lines: list[Line] = []
    with consoles() as (out, err):
        cap = Capture(lambda *rec: lines.append(rec))
        cap.install()
        sys.stdout.write("no newline")
        cap.uninstall()
        assert sys.stdout is out and sys.stderr is err
    assert texts(lines) == ["no newline"]


def test_invalid_utf8_bytes_never_raise() -> None:
    """Bytes written to .buffer pass through and are captured with replacement characters."""
    raw = io.BytesIO()
    lines: list[Line] = []
    with consoles():
        wrapper = io.TextIOWrapper(raw, encoding="utf-8")
        sys.stdout = wrapper
        cap = Capture(lambda *rec: lines.append(rec))
        cap.install()
        try:
            sys.stdout.buffer.write(b"ok \xff\xfe bad \xe2\x82")
            sys.stdout.buffer.write(b"\xac euro\n")
        finally:
            cap.uninstall()
        wrapper.flush()
        assert raw.getvalue() == b"ok \xff\xfe bad \xe2\x82\xac euro\n"
    assert texts(lines) == ["ok \ufffd\ufffd bad \u20ac euro"]


def test_logging_record_captured_once_with_level_and_logger() -> None:
    """A logged warning is one record with level WARNING and the logger's name."""
    logger = logging.getLogger(f"test.{uuid.uuid4().hex[:8]}")
    with capturing() as (lines, _, _):
        handler = logging.StreamHandler()  # writes to the tee'd sys.stderr
        logger.addHandler(handler)
        try:
            logger.warning("lr decayed to %s", 0.1)
        finally:
            logger.removeHandler(handler)
    mine = [(line, s, lvl) for _, line, s, lvl, name in lines if name == logger.name]
    assert mine == [("lr decayed to 0.1", "logging", "WARNING")]


def test_logging_handler_output_is_unchanged_and_not_captured_again() -> None:
    """The handler still prints its formatted line; the tee does not add it as a stderr line."""
    logger = logging.getLogger(f"test.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    with capturing() as (lines, _, err):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s|%(name)s|%(message)s"))
        logger.addHandler(handler)
        logger.error("boom")
    assert err.getvalue() == f"ERROR|{logger.name}|boom\n"
    assert texts(lines, "stderr") == []
    assert texts(lines, "logging") == ["boom"]


def test_logging_exception_text_is_part_of_the_record() -> None:
    """logger.exception() captures the message and the formatted traceback together."""
    logger = logging.getLogger(f"test.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    with capturing() as (lines, _, _):
        try:
            raise KeyError("missing")
        except KeyError:
            logger.exception("lookup failed")
    (rec,) = [r for r in lines if r[4] == logger.name]
    assert rec[3] == "ERROR"
    assert rec[1].startswith("lookup failed\nTraceback (most recent call last):")
    assert rec[1].endswith("KeyError: 'missing'")


def test_logging_from_other_thread_not_double_captured() -> None:
    """A record logged in another thread is captured once and its handler output is not."""
    logger = logging.getLogger(f"test.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    with capturing() as (lines, _, err):
        logger.addHandler(logging.StreamHandler())
        thread = threading.Thread(target=logger.warning, args=("from thread",))
        thread.start()
        thread.join()
    assert err.getvalue() == "from thread\n"
    assert texts(lines) == ["from thread"]


def test_logging_hook_removed_on_uninstall() -> None:
    """After uninstall, logging's own methods are back and nothing is captured."""
    before = (logging.Logger.callHandlers, logging.Handler.handle)
    lines: list[Line] = []
    with consoles():
        cap = Capture(lambda *rec: lines.append(rec))
        cap.install()
        cap.uninstall()
        logging.getLogger(f"test.{uuid.uuid4().hex[:8]}").warning("after")
    assert (logging.Logger.callHandlers, logging.Handler.handle) == before
    assert lines == []


def test_warnings_are_captured_as_stderr_lines() -> None:
    """warnings.warn shown on stderr becomes stderr lines."""
    with capturing() as (lines, _, err), warnings.catch_warnings():
        warnings.simplefilter("always")

        # What Python does by default (pytest records warnings instead).
        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show
        warnings.warn("careful", UserWarning, stacklevel=1)
    assert any("UserWarning: careful" in line for line in texts(lines, "stderr")), (
        lines,
        err.getvalue(),
    )


def test_exception_traceback_emitted_as_error_lines() -> None:
    """A traceback becomes stderr lines at level ERROR, the last naming the exception."""
    lines: list[Line] = []
    try:
        raise ValueError("bad shape")
    except ValueError as exc:
        emit_traceback(lambda *rec: lines.append(rec), type(exc), exc, exc.__traceback__)
    assert lines[0][1] == "Traceback (most recent call last):"
    assert lines[-1][1] == "ValueError: bad shape"
    assert {(s, lvl) for _, _, s, lvl, _ in lines} == {("stderr", "ERROR")}
