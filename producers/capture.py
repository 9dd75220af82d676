"""Console and ``logging`` capture: every line the program shows becomes a ``logs`` record.

* ``sys.stdout`` / ``sys.stderr`` are replaced by tees: every write still
  reaches the real stream first, unchanged (colours, ``isatty``, ``fileno``
  and ``encoding`` are the real stream's), and each complete line becomes a
  record ``(ts_ns, line, "stdout"|"stderr", "", "")``, its time that of the
  write that ended it.  On the caller's thread a write only appends its text
  to a bounded queue, and a write holding newlines also appends the time,
  once per newline, to a second queue (``print`` writes the text, then
  ``"\n"``: one clock read per line, and no object built that the garbage
  collector tracks).  :meth:`Capture.pump`, called by the sender's thread
  before it takes log records (and by ``flush``), turns the queued writes
  into lines.  When ``max_pending_writes`` writes wait unpumped, further
  writes are shown but not captured, and the lines they end are counted
  (``on_drop``).  Partial writes wait for their newline (at most
  ``max_line_chars``, then emitted in pieces, each with the time of the
  next line end queued with it, or of the pump); carriage returns (progress
  bars) collapse to the line's last non-blank state; :meth:`Capture.flush`
  emits a trailing partial line.  Bytes written to ``.buffer`` are decoded
  as UTF-8 with replacement, never raising.  Writes from several threads at
  once may swap their lines' times among themselves (each line still gets
  one, in time order).
* ``logging``: ``Logger.callHandlers`` is wrapped, so each record a logger
  emits is captured once, where it is emitted, with its level and logger
  name (message, then formatted exception and stack).  While the user's
  handlers run, the tees pass their output through without capturing it
  again; the handlers' output is untouched.
* Output written to the file descriptors directly (C extensions, child
  processes) bypasses ``sys.stdout``; ``runstream run -- CMD`` captures that.

:meth:`Capture.uninstall` restores everything that still is ours; a tee or
wrapper that someone else has wrapped in turn is left in place, inert.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice, repeat
from types import TracebackType
from typing import Any, TextIO

from producers.records import level_name

#: Receives one captured line: (ts_ns, line, stream, level, logger).
Emit = Callable[[int, str, str, str, str], None]
#: Receives many captured lines of one stream at once: (times, lines, stream), level and logger empty.
EmitMany = Callable[[list[int], list[str], str], None]
#: Told how many console lines were not captured because the write queue was full.
OnDrop = Callable[[int], None]

_time_ns = time.time_ns


#: Threads inside :func:`quiet` (thread ident -> nesting depth).  A plain dict, not a
#: ``threading.local``: the tee's hot path only tests it for emptiness (a few ns), where
#: reading a ``threading.local`` attribute costs ~80 ns on every write.
_quiet: dict[int, int] = {}
_get_ident = threading.get_ident
_formatter = logging.Formatter()


def _enter_quiet() -> int:
    ident = _get_ident()
    _quiet[ident] = _quiet.get(ident, 0) + 1
    return ident


def _leave_quiet(ident: int) -> None:
    depth = _quiet.get(ident, 1) - 1
    if depth > 0:
        _quiet[ident] = depth
    else:
        _quiet.pop(ident, None)


def _is_quiet() -> bool:
    return bool(_quiet) and _get_ident() in _quiet


def _forget_other_threads() -> None:
    # After a fork only the forking thread goes on; a new thread may reuse another's ident.
    mine = _quiet.get(_get_ident())
    _quiet.clear()
    if mine:
        _quiet[_get_ident()] = mine


os.register_at_fork(after_in_child=_forget_other_threads)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """While inside, this thread's console output is shown but not captured."""
    ident = _enter_quiet()
    try:
        yield
    finally:
        _leave_quiet(ident)


class LineAssembler:
    """Turns a stream of text writes into complete lines (pure, not thread-safe)."""

    def __init__(self, max_line_chars: int = 65_536) -> None:
        self.max_line_chars = max(1, max_line_chars)
        self._parts: list[str] = []
        self._len = 0
        #: The line's last non-blank state before a carriage return.
        self._prev = ""
        self._had_cr = False

    def feed(self, text: str) -> list[str]:
        """Add ``text``; return the lines it completed (without their newline)."""
        if "\r" not in text and not self._had_cr:
            # Fast paths for what print() writes: text without a line end, or text ending in one.
            nl = text.find("\n")
            if nl < 0:
                size = self._len + len(text)
                if size <= self.max_line_chars:
                    if text:
                        self._parts.append(text)
                        self._len = size
                    return []
            elif nl == len(text) - 1 and self._len + nl <= self.max_line_chars:
                parts = self._parts
                if not parts:
                    return [text[:-1]]
                parts.append(text[:-1])
                line = "".join(parts)
                self._parts = []
                self._len = 0
                return [line]
        out: list[str] = []
        if "\n" not in text and "\r" not in text:
            self._append(text, out)
            return out
        pieces = text.split("\n")
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            if piece:
                self._add(piece, out)
            if i < last:
                out.append(self._end_line())
        return out

    def feed_batch(self, texts: list[str], times_of: Callable[[int], list[int]]) -> tuple[list[int], list[str]]:
        """Add several writes; return the lines they completed and, for each, its time (two lists).

        ``times_of(n)`` is called once, with the number of newlines in ``texts``,
        and returns their times in order (each the time of the write that held
        it).  Same lines as :meth:`feed` on each text.  A line completed without
        a newline (an overlong one cut in pieces) gets the time of the next
        newline in the batch, or the current time.  The common case (no
        carriage return, no overlong line) costs a few passes over the batch
        (joined and split at C speed), no call per write or per line.  Raises
        ``TypeError`` (having changed nothing) if a text is no ``str``.
        """
        joined = "".join(texts)
        pieces = joined.split("\n")
        times = times_of(len(pieces) - 1)
        if "\r" in joined or self._had_cr:
            return self._feed_each(texts, times)
        if self._parts:
            pieces[0] = "".join(self._parts) + pieces[0]
        # Overlong lines take the general path, which cuts them (no piece is longer than the batch).
        if len(joined) + self._len > self.max_line_chars and max(map(len, pieces)) > self.max_line_chars:
            return self._feed_each(texts, times)
        rest = pieces.pop()
        self._parts = [rest] if rest else []
        self._len = len(rest)
        return times, pieces

    def _feed_each(self, texts: list[str], times: list[int]) -> tuple[list[int], list[str]]:
        out_times: list[int] = []
        lines: list[str] = []
        # Each write's time: its first newline's, or (no newline) the next one's, or now.
        at = 0
        stamps: list[int] = []
        for text in texts:
            stamps.append(times[at] if at < len(times) else -1)
            at += text.count("\n")
        later = _time_ns()
        for i in range(len(texts) - 1, -1, -1):
            if "\n" in texts[i] and stamps[i] >= 0:
                later = stamps[i]
            else:
                stamps[i] = later
        for text, ts in zip(texts, stamps, strict=True):
            done = self.feed(text)
            out_times += [ts] * len(done)
            lines += done
        return out_times, lines

    def flush(self) -> str | None:
        """The partial line held, if any (and forget it)."""
        if not self._parts and not self._had_cr:
            return None
        line = self._end_line()
        return line or None

    def _add(self, piece: str, out: list[str]) -> None:
        if "\r" not in piece:
            self._append(piece, out)
            return
        segments = piece.split("\r")
        self._append(segments[0], out)
        for seg in segments[1:]:
            current = "".join(self._parts)
            if current.strip():
                self._prev = current
            self._parts = [seg] if seg else []
            self._len = len(seg)
            self._had_cr = True
            if self._len > self.max_line_chars:
                self._append("", out)

    def _append(self, text: str, out: list[str]) -> None:
        if text:
            self._parts.append(text)
            self._len += len(text)
        while self._len > self.max_line_chars:
            joined = "".join(self._parts)
            out.append(joined[: self.max_line_chars])
            rest = joined[self.max_line_chars :]
            self._parts = [rest] if rest else []
            self._len = len(rest)
            self._prev = ""
            self._had_cr = False

    def _end_line(self) -> str:
        line = "".join(self._parts)
        if self._had_cr:
            line = (line if line.strip() else self._prev).rstrip()
        self._parts = []
        self._len = 0
        self._prev = ""
        self._had_cr = False
        return line


class _BinaryTee:
    """``sys.stdout.buffer`` through the tee: bytes pass through, decoded copies are captured."""

    def __init__(self, raw: Any, owner: StreamTee) -> None:
        self._raw = raw
        self._owner = owner
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def write(self, data: Any) -> int:
        n = self._raw.write(data)
        try:
            self._owner._capture_text(self._decoder.decode(bytes(data)))
        except Exception:  # noqa: BLE001 - capture must never break the program's output
            pass
        return n  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class StreamTee:
    """A stand-in for ``sys.stdout``/``sys.stderr`` that writes through and queues what it wrote."""

    def __init__(
        self,
        original: TextIO,
        stream: str,
        emit: Emit,
        max_line_chars: int,
        max_pending_writes: int = 1 << 20,
        emit_many: EmitMany | None = None,
    ) -> None:
        self._original = original
        self._stream = stream
        self._emit = emit
        self._emit_many = emit_many
        self._lines = LineAssembler(max_line_chars)
        #: Texts of writes not yet turned into lines; appended without a lock by any
        #: thread, taken from the left by :meth:`pump` only.
        self._pending: deque[str] = deque()
        #: One time per newline queued in ``_pending``, in order, each appended before its
        #: text (so there are never fewer than the newlines queued).
        self._times: deque[int] = deque()
        self._max_pending = max(1, max_pending_writes)
        self._drop_lock = threading.Lock()
        #: Lines whose ending write found the queue full (reported by :meth:`take_dropped`).
        self._dropped_lines = 0
        self._binary: _BinaryTee | None = None
        self._active = True
        # The hot path as a closure over locals (no attribute look-ups per write); an
        # instance attribute, so it shadows the method below, which says the same.
        self.write = self._make_write()  # type: ignore[method-assign,assignment]

    @property
    def active(self) -> bool:
        """False once uninstalled: the tee then only passes writes through."""
        return self._active

    @active.setter
    def active(self, value: bool) -> None:
        self._active = value
        self.write = self._make_write() if value else self._original.write  # type: ignore[method-assign,assignment]

    def _make_write(self) -> Callable[[str], int]:
        write_through = self._original.write
        pending = self._pending
        append = pending.append
        add_time = self._times.append
        add_times = self._times.extend
        max_pending = self._max_pending
        quiet_threads = _quiet
        get_ident = _get_ident
        now = _time_ns
        drop = self._drop

        def write(text: str) -> int:
            n = write_through(text)
            if not quiet_threads or get_ident() not in quiet_threads:
                if len(pending) < max_pending:
                    try:
                        if "\n" in text:
                            if text == "\n":  # print()'s line end
                                add_time(now())
                            else:
                                add_times(repeat(now(), str.count(text, "\n")))
                    except TypeError:  # not text, yet the stream took it: captured as its str()
                        text = str(text)
                        if "\n" in text:
                            add_times(repeat(now(), text.count("\n")))
                    append(text)
                else:
                    drop(text)
            return n  # type: ignore[no-any-return]

        return write

    @property
    def original(self) -> TextIO:
        return self._original

    def write(self, text: str) -> int:
        n = self._original.write(text)
        # The hot path: everything else happens in pump(), off the caller's thread.
        if self.active and not _is_quiet():
            self._queue(text)
        return n

    def _queue(self, text: Any) -> None:
        if len(self._pending) >= self._max_pending:
            self._drop(text)
            return
        if type(text) is not str:
            text = str(text)
        if "\n" in text:
            self._times.extend(repeat(_time_ns(), text.count("\n")))
        self._pending.append(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._original.flush()

    @property
    def buffer(self) -> _BinaryTee:
        # One per tee: its decoder keeps a multi-byte character split across writes.
        if self._binary is None:
            self._binary = _BinaryTee(self._original.buffer, self)
        return self._binary

    def fileno(self) -> int:
        return self._original.fileno()

    def isatty(self) -> bool:
        return self._original.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)

    def _capture_text(self, text: str) -> None:
        if text and self.active and not _is_quiet():
            self._queue(text)

    def _drop(self, text: Any) -> None:
        try:
            ended = text.count("\n")
        except Exception:  # noqa: BLE001 - not text: nothing that could end a line
            return
        with self._drop_lock:
            self._dropped_lines += ended

    def take_dropped(self) -> int:
        """Lines not captured since the last call because the write queue was full."""
        if not self._dropped_lines:  # a count added meanwhile is reported by the next call
            return 0
        with self._drop_lock:
            n, self._dropped_lines = self._dropped_lines, 0
        return n

    def pump(self) -> None:
        """Turn the queued writes into lines and emit them (one caller at a time; never raises)."""
        pending = self._pending
        if not pending:
            return
        # popleft called len(pending) times in C (writers may append meanwhile, on the right).
        texts = list(islice(iter(pending.popleft, None), len(pending)))
        try:
            try:
                times, lines = self._lines.feed_batch(texts, self._take_times)
            except TypeError:  # not str after all (a str() that the join refused)
                texts = [text if type(text) is str else str(text) for text in texts]
                times, lines = self._lines.feed_batch(texts, self._take_times)
            if self._emit_many is not None:
                if lines:
                    self._emit_many(times, lines, self._stream)
            else:
                emit, stream = self._emit, self._stream
                for ts, line in zip(times, lines, strict=True):
                    emit(ts, line, stream, "", "")
        except Exception:  # noqa: BLE001 - capture must never raise into the sender
            pass

    def _take_times(self, wanted: int) -> list[int]:
        """The times of the next ``wanted`` newlines queued (the current time for any missing)."""
        queued = self._times
        times = list(islice(iter(queued.popleft, None), min(wanted, len(queued))))
        if len(times) < wanted:  # only if a text's newlines were miscounted when written
            times += [_time_ns()] * (wanted - len(times))
        return times

    def flush_partial(self) -> None:
        """Emit the trailing partial line, if any (after :meth:`pump`)."""
        line = self._lines.flush()
        if line is not None:
            self._emit(_time_ns(), line, self._stream, "", "")


def record_text(record: logging.LogRecord) -> str:
    """A ``logging`` record's message, then its formatted exception and stack, if any."""
    try:
        text = record.getMessage()
    except Exception:  # noqa: BLE001 - bad format arguments: the handler reports those
        text = str(record.msg)
    if record.exc_info and record.exc_info[0] is not None:
        exc_text = record.exc_text or _formatter.formatException(record.exc_info)
        text = f"{text}\n{exc_text}" if text else exc_text
    elif record.exc_text:
        text = f"{text}\n{record.exc_text}"
    if record.stack_info:
        text = f"{text}\n{record.stack_info}"
    return text


class Capture:
    """Installs and removes the console tees and the ``logging`` hook for one run."""

    _installed: Capture | None = None

    def __init__(
        self,
        emit: Emit,
        *,
        max_line_chars: int = 65_536,
        max_pending_writes: int = 1 << 20,
        on_drop: OnDrop | None = None,
        emit_many: EmitMany | None = None,
    ) -> None:
        self._emit = emit
        self._emit_many = emit_many
        self.max_line_chars = max_line_chars
        self.max_pending_writes = max_pending_writes
        self._on_drop = on_drop
        self._pump_lock = threading.Lock()
        self._tees: dict[str, StreamTee] = {}
        self._orig_call_handlers: Any = None
        self._orig_handle: Any = None
        self._wrapped_call_handlers: Any = None
        self._wrapped_handle: Any = None
        self.active = False

    def install(self, *, streams: bool = True, logs: bool = True) -> None:
        """Start capturing; raises ``RuntimeError`` if another capture is installed."""
        if Capture._installed is not None:
            raise RuntimeError("another runstream capture is already installed")
        Capture._installed = self
        self.active = True
        if streams:
            for name in ("stdout", "stderr"):
                current = getattr(sys, name)
                if current is None:
                    continue
                tee = StreamTee(
                    current, name, self._emit, self.max_line_chars, self.max_pending_writes, self._emit_many
                )
                self._tees[name] = tee
                setattr(sys, name, tee)
        if logs:
            self._hook_logging()

    def _hook_logging(self) -> None:
        cap = self
        orig_call = logging.Logger.callHandlers
        orig_handle = logging.Handler.handle

        def callHandlers(logger: logging.Logger, record: logging.LogRecord) -> None:  # noqa: N802
            if cap.active:
                cap.capture_record(record)
            ident = _enter_quiet()
            try:
                orig_call(logger, record)
            finally:
                _leave_quiet(ident)

        def handle(handler: logging.Handler, record: logging.LogRecord) -> Any:
            # Also covers handlers run outside callHandlers (QueueListener threads).
            ident = _enter_quiet()
            try:
                return orig_handle(handler, record)
            finally:
                _leave_quiet(ident)

        self._orig_call_handlers, self._orig_handle = orig_call, orig_handle
        self._wrapped_call_handlers, self._wrapped_handle = callHandlers, handle
        logging.Logger.callHandlers = callHandlers  # type: ignore[method-assign,assignment]
        logging.Handler.handle = handle  # type: ignore[method-assign,assignment]

    def capture_record(self, record: logging.LogRecord) -> None:
        """Emit one ``logging`` record (never raises)."""
        try:
            self._emit(
                time.time_ns(),
                record_text(record),
                "logging",
                level_name(record.levelno),
                record.name,
            )
        except Exception:  # noqa: BLE001
            pass

    def emit_traceback(
        self,
        exc_type: type[BaseException],
        exc: BaseException,
        tb: TracebackType | None,
        header: str = "",
    ) -> None:
        """Emit a traceback as ``stderr`` lines at level ``ERROR`` (never raises)."""
        emit_traceback(self._emit, exc_type, exc, tb, header)

    def pump(self) -> None:
        """Emit the lines that the console writes queued so far completed (thread-safe; never raises)."""
        with self._pump_lock:
            for tee in list(self._tees.values()):
                tee.pump()
                dropped = tee.take_dropped()
                if dropped and self._on_drop is not None:
                    try:
                        self._on_drop(dropped)
                    except Exception:  # noqa: BLE001
                        pass

    def flush(self) -> None:
        """Emit every queued line, then every tee's trailing partial line."""
        with self._pump_lock:
            for tee in list(self._tees.values()):
                try:
                    tee.pump()
                    tee.flush_partial()
                except Exception:  # noqa: BLE001
                    pass

    def uninstall(self, *, flush: bool = True) -> None:
        """Flush (unless told not to), stop capturing, restore what is still ours (idempotent)."""
        if not self.active:
            return
        self.active = False
        for tee in self._tees.values():
            tee.active = False  # later writes pass through; what was queued is still pumped
        if flush:
            self.flush()
        for name, tee in self._tees.items():
            if getattr(sys, name) is tee:
                setattr(sys, name, tee.original)
        self._tees.clear()
        if self._wrapped_call_handlers is not None:
            if logging.Logger.__dict__.get("callHandlers") is self._wrapped_call_handlers:
                logging.Logger.callHandlers = self._orig_call_handlers  # type: ignore[method-assign]
            if logging.Handler.__dict__.get("handle") is self._wrapped_handle:
                logging.Handler.handle = self._orig_handle  # type: ignore[method-assign]
        if Capture._installed is self:
            Capture._installed = None


def emit_traceback(
    emit: Emit,
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | None,
    header: str = "",
) -> None:
    """Emit a traceback to ``emit`` as ``stderr`` lines at level ``ERROR`` (never raises)."""
    try:
        text = header + "".join(traceback.format_exception(exc_type, exc, tb))
        ts = time.time_ns()
        for line in text.rstrip("\n").split("\n"):
            emit(ts, line, "stderr", "ERROR", "")
    except Exception:  # noqa: BLE001
        pass
