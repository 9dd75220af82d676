"""``runstream run -- CMD ARGS...``: any command as a tracked run, without code changes.

The command runs under a pseudo-terminal (so progress bars, colours and
``isatty`` behave as on a terminal; our stdin is passed through when it is a
terminal, which is then put in raw mode for the duration).  Every byte it
writes is copied to our stdout as it comes; complete lines become ``logs``
records (stream ``stdout``: a terminal merges the two streams), carriage-return
updates collapsed to the line's last state and ANSI escapes kept raw
(:class:`producers.capture.LineAssembler`).  ``use_pty=False`` uses two pipes
instead and keeps stdout and stderr apart (each copied to ours; the child
gets ``PYTHONUNBUFFERED=1`` unless set, so a Python child's streams stay in
order).

The run is created with the SDK (:func:`producers.run.init`, console capture
off, the child's process tree sampled).  Its final status follows the exit
code: 0 ``finished``, non-zero ``failed``, death by a signal ``killed``; the
launcher returns the child's exit code (128 + signal when killed).
SIGINT, SIGTERM and SIGHUP are forwarded to the child (the launcher waits for
it to exit); SIGWINCH resizes the pseudo-terminal.

The child's environment gets ``RUNSTREAM_RUN_ID`` (so an SDK inside joins the
same run), ``RUNSTREAM_KAFKA``, ``RUNSTREAM_TOPIC_PREFIX``,
``RUNSTREAM_PROJECT`` and ``RUNSTREAM_CAPTURE=0``: the child's SDK then
captures neither the console nor ``logging`` (the launcher already has every
line from the terminal; capturing them again would store each twice), while
its metrics, evaluations and resources go to the run as usual.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from producers import identity as identity_mod
from producers.capture import LineAssembler
from producers.options import Options
from runstream import settings as settings_mod
from runstream.settings import Settings

#: Signals passed on to the child.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How long output still arriving after the child exited is waited for
#: (a grandchild may hold the terminal open).
DRAIN_TIMEOUT_S = 5.0
_READ_BYTES = 65536

Emit = Callable[[int, str, str, str, str], None]


@dataclass
class _Pending:
    """Lines read before the run exists, then the run's emitter (thread-safe switch)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    lines: list[tuple[int, str, str, str, str]] = field(default_factory=list)
    emit: Emit | None = None

    def put(self, ts_ns: int, line: str, stream: str) -> None:
        with self.lock:
            if self.emit is None:
                self.lines.append((ts_ns, line, stream, "", ""))
                return
            self.emit(ts_ns, line, stream, "", "")

    def attach(self, emit: Emit) -> None:
        with self.lock:
            for item in self.lines:
                emit(*item)
            self.lines.clear()
            self.emit = emit


class _Pump(threading.Thread):
    """Copies one output fd of the child to one of ours and turns what it carries into lines."""

    def __init__(self, src: int, dst: int, stream: str, sink: _Pending, max_line_chars: int) -> None:
        super().__init__(name=f"runstream-launch-{stream}", daemon=True)
        self.src, self.dst, self.stream, self.sink = src, dst, stream, sink
        self.lines = LineAssembler(max_line_chars)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def run(self) -> None:
        while True:
            try:
                data = os.read(self.src, _READ_BYTES)
            except OSError:  # EIO: every holder of the terminal's other side closed it
                data = b""
            if not data:
                break
            _write_all(self.dst, data)
            self._lines(self.decoder.decode(data))
        self._lines(self.decoder.decode(b"", final=True))
        tail = self.lines.flush()
        if tail is not None:
            self.sink.put(time.time_ns(), tail, self.stream)

    def _lines(self, text: str) -> None:
        if not text:
            return
        ts = time.time_ns()
        for line in self.lines.feed(text):
            self.sink.put(ts, line, self.stream)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        except OSError:  # our stdout went away: keep recording, stop copying
            return
        view = view[n:]


def _winsize(fd: int) -> bytes | None:
    try:
        return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None


def _copy_winsize(master: int) -> None:
    size = _winsize(sys.stdout.fileno()) if sys.stdout.isatty() else None
    if size is None and sys.stdin.isatty():
        size = _winsize(sys.stdin.fileno())
    if size is None:
        cols, rows = shutil.get_terminal_size((80, 24))
        size = struct.pack("HHHH", rows, cols, 0, 0)
    with contextlib.suppress(OSError):
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)


def _set_controlling_tty() -> None:  # runs in the child, after setsid()
    with contextlib.suppress(OSError):
        fcntl.ioctl(1, termios.TIOCSCTTY, 0)


def child_env(settings: Settings, run_id: str, project: str, use_pty: bool) -> dict[str, str]:
    """The environment of the child (see the module docstring)."""
    env = dict(os.environ)
    env.update(
        RUNSTREAM_RUN_ID=run_id,
        RUNSTREAM_KAFKA=settings.kafka,
        RUNSTREAM_TOPIC_PREFIX=settings.topic_prefix,
        RUNSTREAM_PROJECT=project,
        RUNSTREAM_CAPTURE="0",
    )
    if settings.data_dir:
        env["RUNSTREAM_DATA_DIR"] = settings.data_dir
    if not use_pty:
        env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def outcome(returncode: int) -> tuple[str, int, str]:
    """(final status, exit code to return, reason) for a child's ``Popen.returncode``."""
    if returncode == 0:
        return "finished", 0, ""
    if returncode > 0:
        return "failed", returncode, f"exit code {returncode}"
    signum = -returncode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return "killed", 128 + signum, f"killed by {name}"


def launch(
    command: list[str],
    *,
    project: str | None = None,
    name: str | None = None,
    kafka: str | None = None,
    use_pty: bool = True,
    settings: Settings | None = None,
    options: Options | None = None,
) -> int:
    """Run ``command`` as a tracked run; return its exit code (128 + signal when killed).

    Blocks until the command exits and its output is drained, then up to
    ``options.finish_timeout_s`` for the broker (what it has not acknowledged
    by then is spooled).  Must be called from the main thread (it installs
    signal handlers, restored on return).  Raises ``FileNotFoundError`` /
    ``PermissionError`` when the command cannot be started (no run is
    created then) and :class:`runstream.errors.ConfigError` for a malformed
    ``kafka`` address.
    """
    from producers.run import init  # the run module pulls in the sender: only when launching

    if not command:
        raise ValueError("no command to run")
    settings = settings or settings_mod.load({"kafka": kafka, "project": project})
    if kafka:
        settings = replace(settings, kafka=kafka)
    settings_mod.validate_kafka(settings.kafka)
    run_id = identity_mod.detect(settings).run_id
    project = project or settings.project or "default"
    name = name or Path(command[0]).name
    env = child_env(settings, run_id, project, use_pty)
    sink = _Pending()
    max_line_chars = (options or Options()).max_line_chars

    child: subprocess.Popen[bytes] | None = None
    resized = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    def on_winch(signum: int, frame: FrameType | None) -> None:
        resized.set()

    previous: dict[int, Any] = {}
    for sig in (*FORWARDED, signal.SIGWINCH):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, on_winch if sig == signal.SIGWINCH else forward)

    pumps: list[_Pump] = []
    saved_tty: Any = None
    master = -1
    try:
        if use_pty:
            master, slave = pty.openpty()
            raw = sys.stdin.isatty()
            attrs = termios.tcgetattr(slave)
            if not (raw and sys.stdout.isatty()):
                attrs[1] &= ~termios.ONLCR  # bytes reach a file or pipe exactly as written
                termios.tcsetattr(slave, termios.TCSANOW, attrs)
            _copy_winsize(master)
            try:
                child = subprocess.Popen(
                    command,
                    stdin=slave if raw else None,
                    stdout=slave,
                    stderr=slave,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_set_controlling_tty,  # noqa: PLW1509 - setsid then TIOCSCTTY, no locks taken
                )
            finally:
                os.close(slave)
            pumps.append(_Pump(master, sys.stdout.fileno(), "stdout", sink, max_line_chars))
            if raw:
                saved_tty = termios.tcgetattr(sys.stdin.fileno())
                tty.setraw(sys.stdin.fileno())
                threading.Thread(target=_pump_stdin, args=(sys.stdin.fileno(), master), daemon=True).start()
        else:
            child = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
            assert child.stdout is not None and child.stderr is not None
            pumps.append(_Pump(child.stdout.fileno(), sys.stdout.fileno(), "stdout", sink, max_line_chars))
            pumps.append(_Pump(child.stderr.fileno(), sys.stderr.fileno(), "stderr", sink, max_line_chars))
        for p in pumps:
            p.start()

        opts = replace(options or Options(), sample_root_pid=child.pid)
        # The start record's argv is the process's sys.argv: make it the command run, not ours.
        own_argv, sys.argv = sys.argv, list(command)
        try:
            run = init(
                project=project,
                name=name,
                run_id=run_id,
                capture=False,
                settings=settings,
                options=opts,
            )
        finally:
            sys.argv = own_argv
        # init installed the SDK's SIGTERM hook (finish killed, then die): here the
        # child decides, so SIGTERM is forwarded like the others.
        signal.signal(signal.SIGTERM, forward)
        sink.attach(run._put_log)  # noqa: SLF001 - the launcher is the SDK's own console capture

        while True:
            try:
                returncode = child.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if resized.is_set() and master >= 0:
                    resized.clear()
                    _copy_winsize(master)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        for p in pumps:
            p.join(max(0.0, deadline - time.monotonic()))
        status, code, reason = outcome(returncode)
        run.finish(status, exit_code=code, reason=reason)
        return code
    finally:
        if saved_tty is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved_tty)
        if master >= 0:
            with contextlib.suppress(OSError):
                os.close(master)
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError, OSError):
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if child is not None and child.returncode is None:  # we are leaving on an error
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            child.wait()


def _pump_stdin(src: int, master: int) -> None:
    while True:
        try:
            data = os.read(src, 4096)
        except OSError:
            return
        if not data:
            return
        _write_all(master, data)
