"""Console and ``logging`` capture: every line the program shows becomes a ``logs`` record.

* ``sys.stdout`` / ``sys.stderr`` are replaced by tees: every write still
  reaches the real stream first, unchanged (colours, ``isatty``, ``fileno``
  and ``encoding`` are the real stream's), and each complete line becomes a
  record ``(ts_ns, line, "stdout"|"stderr", "", "")``.  Partial writes wait
  for their newline (at most ``max_line_chars``, then emitted in pieces);
  carriage returns (progress bars) collapse to the line's last non-blank
  state; :meth:`Capture.flush` emits a trailing partial line.  Bytes written
  to ``.buffer`` are decoded as UTF-8 with replacement, never raising.
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
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TextIO

from producers.records import level_name

#: Receives one captured line: (ts_ns, line, stream, level, logger).
Emit = Callable[[int, str, str, str, str], None]

class _ThreadState(threading.local):
    #: Nesting depth of :func:`quiet` in this thread; a class default keeps the hot-path read cheap
    #: (``getattr(local, name, 0)`` on an unset name raises and swallows AttributeError every call).
    quiet = 0


_tls = _ThreadState()
_formatter = logging.Formatter()


def _quiet_depth() -> int:
    return _tls.quiet


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """While inside, this thread's console output is shown but not captured."""
    _tls.quiet = _quiet_depth() + 1
    try:
        yield
    finally:
        _tls.quiet -= 1


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
    """A stand-in for ``sys.stdout``/``sys.stderr`` that writes through and captures lines."""

    def __init__(self, original: TextIO, stream: str, emit: Emit, max_line_chars: int) -> None:
        self._original = original
        self._stream = stream
        self._emit = emit
        self._lines = LineAssembler(max_line_chars)
        self._lock = threading.RLock()
        self._binary: _BinaryTee | None = None
        #: False once uninstalled: the tee then only passes writes through.
        self.active = True

    @property
    def original(self) -> TextIO:
        return self._original

    def write(self, text: str) -> int:
        n = self._original.write(text)
        try:
            self._capture_text(text if isinstance(text, str) else str(text))
        except Exception:  # noqa: BLE001 - capture must never break the program's output
            pass
        return n

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
        if not text or not self.active or _quiet_depth():
            return
        with self._lock:
            lines = self._lines.feed(text)
        if lines:
            ts = time.time_ns()
            for line in lines:
                self._emit(ts, line, self._stream, "", "")

    def flush_partial(self) -> None:
        """Emit the trailing partial line, if any."""
        with self._lock:
            line = self._lines.flush()
        if line is not None:
            self._emit(time.time_ns(), line, self._stream, "", "")


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

    def __init__(self, emit: Emit, *, max_line_chars: int = 65_536) -> None:
        self._emit = emit
        self.max_line_chars = max_line_chars
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
                tee = StreamTee(current, name, self._emit, self.max_line_chars)
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
            _tls.quiet = _quiet_depth() + 1
            try:
                orig_call(logger, record)
            finally:
                _tls.quiet -= 1

        def handle(handler: logging.Handler, record: logging.LogRecord) -> Any:
            # Also covers handlers run outside callHandlers (QueueListener threads).
            _tls.quiet = _quiet_depth() + 1
            try:
                return orig_handle(handler, record)
            finally:
                _tls.quiet -= 1

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

    def flush(self) -> None:
        """Emit every tee's trailing partial line."""
        for tee in self._tees.values():
            try:
                tee.flush_partial()
            except Exception:  # noqa: BLE001
                pass

    def uninstall(self, *, flush: bool = True) -> None:
        """Flush (unless told not to), stop capturing, restore what is still ours (idempotent)."""
        if not self.active:
            return
        if flush:
            self.flush()
        self.active = False
        for name, tee in self._tees.items():
            tee.active = False
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
