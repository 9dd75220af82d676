"""The trainer's API: :func:`init` starts a :class:`Run`; ``run.log`` records metrics.

What a run does for the process that starts it:

* sends a ``runs`` ``start`` record, a ``heartbeat`` every
  ``heartbeat_interval_s`` and a ``finish`` record (``finished``, ``failed``
  or ``killed``), from a background sender thread (:mod:`producers.sender`);
* captures stdout, stderr and ``logging`` as ``logs`` records
  (:mod:`producers.capture`; ``capture=False`` turns that off);
* samples host, process-tree and GPU resources as ``resources`` records
  every ``options.sample_interval_s`` on a daemon thread (the GPUs and
  host-wide values on local rank 0 only, see ``Options.sample_node_wide``)
  (:mod:`producers.sampler`; ``Options(sample=False)`` turns that off).  The
  static facts (host, GPU names and UUIDs, driver versions) go into the
  ``start`` record's ``config`` under the key ``_system`` (unless the user's
  config has that key), so they are stored and shown with the run's config;
* logs evaluation results as ``evals`` records (``log_confusion_matrix``,
  ``log_pr_curve``, ``log_table``, ``log_row``, ``log_list``; shapes in
  :mod:`producers.evals`);
* finishes by itself: at exit (``finished``, or ``failed`` after an uncaught
  exception in another thread), on an uncaught exception (its traceback is
  logged at ``ERROR``, then ``failed``; ``killed`` for Ctrl-C), and on
  SIGTERM (``killed``; the previous handler, or the default action, runs
  afterwards).  Previous hooks are chained, never replaced, and restored at
  finish when still ours.

``run.log`` never blocks and never raises: it checks its input cheaply,
appends one tuple to a bounded queue and returns (see :mod:`producers.buffer`
for the overflow policy).  A process forked from a running trainer (data
loader workers) keeps the hooks but sends nothing.

Only one run is active per process: :func:`init` finishes the previous one.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import operator
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import replace
from itertools import repeat
from types import FrameType, TracebackType
from typing import Any

from producers import identity as identity_mod
from producers.batch import Batcher
from producers.buffer import Buffer
from producers.capture import Capture, emit_traceback, quiet
from producers.options import Options
from producers.records import (
    NAME_MAX,
    LogLine,
    coerce_values,
    finish_record,
    heartbeat_record,
    log_line,
    start_record,
)
from producers.sampler import Sampler, SamplerThread
from producers.sender import Sender
from producers.sender import sync as _sync_spool
from producers.spool import DiskSpool
from runstream import settings as settings_mod
from runstream.events.runs import FINAL_STATUSES
from runstream.settings import Settings

try:  # run.log's compiled fast path: setup.py builds it where a C compiler is present
    from producers._hotpath import MetricsLog
except ImportError:  # then run.log is Run.log (Python): the same records, a few hundred ns more per call
    MetricsLog = None

__all__ = ["Options", "Run", "active", "init", "sync"]

log = logging.getLogger("runstream.sdk")

_time_ns = time.time_ns
#: Most distinct metric names remembered as already checked (the fast path's set).
_KNOWN_NAMES_MAX = 100_000
#: Most distinct problems ``run.log`` warns about (each once).
_WARNINGS_MAX = 20

_active: Run | None = None
_active_lock = threading.Lock()


def active() -> Run | None:
    """The run of this process that is not finished yet, if any."""
    return _active


def init(
    project: str | None = None,
    name: str | None = None,
    config: Any = None,
    tags: Any = None,
    kafka: str | None = None,
    run_id: str | None = None,
    capture: bool = True,
    settings: Settings | None = None,
    options: Options | None = None,
) -> Run:
    """Start a run (finishing this process's previous one first) and return it.

    ``kafka``, ``run_id`` and ``project`` override ``settings`` (by default
    :func:`runstream.settings.load`: ``RUNSTREAM_*`` variables, then
    defaults).  Does not wait for the broker; raises
    :class:`runstream.errors.ConfigError` for a malformed ``kafka`` address.
    """
    global _active
    with _active_lock:
        previous = _active
    if previous is not None:
        previous.finish()
    run = Run(
        project=project,
        name=name,
        config=config,
        tags=tags,
        kafka=kafka,
        run_id=run_id,
        capture=capture,
        settings=settings,
        options=options,
    )
    with _active_lock:
        _active = run
    return run


def _evals() -> Any:
    """:mod:`producers.evals`, imported at the first eval logged: it needs numpy, which a run
    that logs no eval should not pay for at ``init`` (about 60 ms)."""
    from producers import evals

    return evals


class Run:
    """One training process's view of a run (see the module docstring).

    Prefer :func:`init`, which also finishes a previous run; ``Run(...)``
    takes the same arguments.  A context manager: leaving the block
    finishes the run, ``failed`` when an exception escapes it.
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        config: Any = None,
        tags: Any = None,
        kafka: str | None = None,
        run_id: str | None = None,
        capture: bool = True,
        settings: Settings | None = None,
        options: Options | None = None,
    ) -> None:
        flags = {"kafka": kafka, "run_id": run_id, "project": project}
        if settings is None:
            settings = settings_mod.load(flags)
        else:
            overrides: dict[str, Any] = {k: v for k, v in flags.items() if v}
            settings = replace(settings, **overrides)
            settings_mod.validate_kafka(settings.kafka)
        self.settings = settings
        self.options = opts = options or Options()
        ident = identity_mod.detect(settings, run_id)
        self.identity = ident
        #: The run id, shared by every rank of the job (see :mod:`producers.identity`).
        self.id: str = ident.run_id
        self.project: str = project or settings.project or "default"
        self.name: str = name or f"{identity_mod.program_name()}-{self.id[:6]}"
        self.config: Any = config if config is not None else {}
        self.tags: list[str] = [str(t) for t in tags] if tags else []
        self.status = "running"
        self._pending_status: str | None = None
        self._pending_reason = ""
        self._finished = False
        self._finish_lock = threading.Lock()
        self._runs_lock = threading.Lock()
        self._ok = False

        bounds = opts.bounds()
        self._buffer = buffer = Buffer(bounds)
        self._sender = Sender(
            buffer,
            Batcher(
                producer=ident.producer,
                run=self.id,
                node=ident.node,
                rank=ident.rank,
                max_records=opts.batch_max_records,
                max_bytes=opts.max_envelope_bytes,
                redact=opts.redact,
            ),
            settings=settings,
            options=opts,
            key=self.id.encode(),
            spool=DiskSpool.for_settings(settings, opts.spool_max_bytes) if opts.spool else None,
            heartbeat=self._beat,
        )
        # Hot-path state, read without locks.
        self._mq: deque[Any] = buffer.queues["metrics"]
        self._mbound = bounds["metrics"]
        self._lq: deque[Any] = buffer.queues["logs"]
        self._lbound = bounds["logs"]
        self._wake_at = opts.batch_max_records
        self._known: set[str] = set()
        self._warned: set[str] = set()
        self._compile_log()

        self._sampler = self._start_sampler() if opts.sample else None
        system = self._sampler.wait_ready(opts.sample_start_wait_s) if self._sampler else None
        start = start_record(
            project=self.project,
            name=self.name,
            config=self.config,
            tags=self.tags,
            host=ident.host,
            pid=ident.pid,
            world_size=ident.world_size,
            argv=list(sys.argv),
        )
        if system:
            start["config"].setdefault("_system", system)
        buffer.put("runs", start)
        self._sender.start()
        self._capture: Capture | None = None
        # Under `runstream run` (producers.launch) the terminal already carries every line.
        if capture and settings_mod.environ_snapshot(("RUNSTREAM_CAPTURE",)).get("RUNSTREAM_CAPTURE") != "0":
            cap = Capture(
                self._put_log,
                max_line_chars=opts.max_line_chars,
                max_pending_writes=2 * bounds["logs"],
                on_drop=lambda n: buffer.count("dropped", "logs", n),
                emit_many=self._put_logs,
            )
            try:
                cap.install()
                self._capture = cap
                buffer.before_logs = cap.pump
            except RuntimeError:
                log.warning("Console capture is off: another run captures this process. run=%s", self.id)
        self._install_hooks()
        if ident.warning:
            log.warning("%s run=%s rank=%d", ident.warning, self.id, ident.rank)

    # ------------------------------------------------------------ identity

    @property
    def node(self) -> str:
        return self.identity.node

    @property
    def rank(self) -> int:
        return self.identity.rank

    @property
    def local_rank(self) -> int:
        return self.identity.local_rank

    @property
    def world_size(self) -> int:
        return self.identity.world_size

    @property
    def finished(self) -> bool:
        return self._finished

    # ------------------------------------------------------------ hot path

    def _compile_log(self) -> None:
        """Make this run's ``log`` the compiled fast path (``producers/_hotpath.c``), when it was built, over the
        current metrics queue: it takes what :meth:`log`'s fast checks take, queues the same record, and hands
        anything else to :meth:`log` (so drops, conversions and warnings stay in one place)."""
        if MetricsLog is not None:
            slow = Run.log.__get__(self, Run)
            # An instance attribute over the method: ``run.log(...)`` then costs no Python frame.
            vars(self)["log"] = MetricsLog(
                self._mq, self._mbound, self._known, self._wake_at, self._sender, slow, NAME_MAX
            )

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        """Record ``values`` (metric name -> number) at ``step``; never blocks, never raises.

        Numbers may be ``int``/``float``, numpy scalars or one-element
        tensors (converted with ``float()``: for a CUDA tensor that is one
        device synchronisation — pass ``loss.item()`` yourself to choose
        when).  Nested maps become ``outer/inner`` names.  Names that are not
        text and values that are not numbers are left out, with one warning
        per name; a negative or non-integer ``step`` refuses the record.
        When the metrics queue is full the record is dropped and counted.
        """
        q = self._mq
        n = len(q)
        if n >= self._mbound:
            self._buffer.count("dropped", "metrics")
            return
        if (
            values.__class__ is dict
            and values
            and (step is None or (step.__class__ is int and step >= 0))
            and self._known.issuperset(values)  # names already checked once
        ):
            # One pass in C instead of a Python loop over the values: 0.0 plus every value is
            # an exact float only for Python numbers and their immutable kin (bool, int and
            # float subclasses, Fraction), which the sender makes plain (records.plain_values).
            # A numpy scalar, an array or a tensor sums to its own type and text raises: those
            # take the checked path, which converts them now (a tensor may change in place).
            try:
                fast = sum(values.values(), 0.0).__class__ is float
            except Exception:  # noqa: BLE001 - TypeError for text; anything from exotic objects
                fast = False
            if fast:
                q.append((_time_ns(), step, values.copy()))
                if n >= self._wake_at and not self._sender.wake_pending:
                    self._sender.wake()
                return
        self._log_checked(values, step)

    def _log_checked(self, values: Any, step: Any) -> None:
        try:
            if step is not None:
                if isinstance(step, float) and step.is_integer():
                    step = int(step)
                try:
                    step = operator.index(step)
                except TypeError:
                    step = -1
                if step < 0:
                    self._warn_once("step", "run.log step must be an integer >= 0; record dropped.")
                    self._buffer.count("invalid", "metrics")
                    return
            clean, bad = coerce_values(values)
            for name in bad:
                self._warn_once(f"name:{name}", f"run.log value is not a number; left out. name={name}")
            if not clean:
                self._buffer.count("invalid", "metrics")
                return
            if len(self._known) < _KNOWN_NAMES_MAX:
                self._known.update(clean)
            if self._buffer.put("metrics", (_time_ns(), step, clean)):
                if len(self._mq) >= self._wake_at and not self._sender.wake_pending:
                    self._sender.wake()
        except Exception:  # noqa: BLE001 - never raise into the training loop
            self._buffer.count("invalid", "metrics")

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned or len(self._warned) >= _WARNINGS_MAX:
            return
        self._warned.add(key)
        log.warning(message)

    def _put_log(self, ts_ns: int, line: str, stream: str, level: str, logger: str) -> None:
        q = self._lq
        n = len(q)
        if n >= self._lbound:
            self._buffer.count("dropped", "logs")
            return
        q.append(log_line(ts_ns, line, stream, level, logger))
        if n >= self._wake_at and not self._sender.wake_pending:
            self._sender.wake()

    # ---------------------------------------------------------- evaluation

    def log_confusion_matrix(self, y_true: Any, y_pred: Any, labels: Any, name: str = "confusion_matrix") -> bool:
        """Log the confusion matrix (and per-label P/R/F1) of ``y_pred`` against ``y_true``.

        Shapes and limits: :mod:`producers.evals`.  Raises ``ValueError`` for bad
        input; returns false when the record was dropped (buffer full).
        """
        name = _evals().check_name(name)
        return self._put_eval(name, "confusion_matrix", _evals().confusion_matrix(y_true, y_pred, labels))

    def log_pr_curve(
        self, y_true: Any, y_score: Any, labels: Any, name: str = "pr_curve", thresholds: Any = 101
    ) -> bool:
        """Log per-label precision/recall/F1 at each threshold (one-vs-rest).

        ``y_score`` is (n, n_labels), or (n,) for two labels; ``thresholds`` a
        count (evenly over 0..1) or the values.  Raises ``ValueError`` for bad
        input; returns false when the record was dropped (buffer full).
        """
        name = _evals().check_name(name)
        return self._put_eval(name, "pr_curve", _evals().pr_curve(y_true, y_score, labels, thresholds))

    def log_table(self, name: str, columns: Any, rows: Any) -> bool:
        """Log a table: ``columns`` names, ``rows`` lists of cells. Raises ``ValueError``."""
        name = _evals().check_name(name)
        return self._put_eval(name, "table", _evals().table(columns, rows))

    def log_row(self, name: str, **values: Any) -> bool:
        """Log one row of the table ``name`` (rows of one name form a table). Raises ``ValueError``."""
        name = _evals().check_name(name)
        return self._put_eval(name, "row", _evals().row(values))

    def log_list(self, name: str, values: Any) -> bool:
        """Log a list of numbers under ``name``. Raises ``ValueError``."""
        name = _evals().check_name(name)
        return self._put_eval(name, "list", _evals().list_values(values))

    def _put_eval(self, name: str, kind: str, data: dict[str, Any]) -> bool:
        return self._buffer.put("evals", {"ts_ns": _time_ns(), "name": name, "type": kind, "data": data})

    def _start_sampler(self) -> SamplerThread:
        from producers.nvml import NvmlBackend

        opts = self.options
        node_wide = opts.sample_node_wide
        if node_wide is None:
            node_wide = self.identity.local_rank == 0
        sampler = Sampler(root_pid=opts.sample_root_pid, gpu=NvmlBackend(), node_wide=node_wide)
        thread = SamplerThread(sampler, lambda r: self._buffer.put("resources", r), opts.sample_interval_s)
        thread.start()
        return thread

    def _put_logs(self, times: list[int], lines: list[str], stream: str) -> None:
        # Called by the capture's pump (the sender's thread, or flush): no wake needed.
        q = self._lq
        room = self._lbound - len(q)
        if room < len(lines):
            self._buffer.count("dropped", "logs", len(lines) - max(room, 0))
            lines = lines[: max(room, 0)]
        # One LogLine per line, built in C by map(): no Python call per line.
        q.extend(map(LogLine, times, lines, repeat(stream), repeat(""), repeat("")))

    def _beat(self) -> None:
        with self._runs_lock:  # never after the finish record
            if not self._finished:
                self._buffer.put("runs", heartbeat_record())

    # ----------------------------------------------------------- lifecycle

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait up to ``timeout_s`` until everything logged before the call is acknowledged.

        Complete console lines are included; a partial line waits for its
        newline (or :meth:`finish`).  Returns false on timeout or when a
        record failed or went to the disk spool; never raises.
        """
        if self._finished:
            return self._ok
        return self._sender.flush(timeout_s)

    def finish(self, status: str = "finished", exit_code: int | None = None, reason: str = "") -> bool:
        """End the run: stop capturing, send ``finish``, flush, stop the sender.

        Idempotent (later calls return the first one's result).  Blocks up
        to ``options.finish_timeout_s`` (+ a few seconds to stop); what the
        broker has not acknowledged by then goes to the disk spool.  Returns
        whether everything was acknowledged.  Raises ``ValueError`` for a
        status other than ``finished``, ``failed`` or ``killed``.
        """
        global _active
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        with self._finish_lock:
            if self._finished:
                return self._ok
            self._finished = True
        try:
            if self._sampler is not None:
                self._sampler.stop()
            if self._capture is not None:
                self._capture.uninstall()
            self.status = status
            with self._runs_lock:
                self._buffer.put("runs", finish_record(status, exit_code, reason))
            self._ok = self._sender.close(self.options.finish_timeout_s)
        finally:
            self._silence()  # later log() calls vanish
            self._remove_hooks()
            with _active_lock:
                if _active is self:
                    _active = None
        return self._ok

    def stats(self) -> dict[str, Any]:
        """Counters per kind (enqueued, dropped, invalid, sent, acked, failed, spooled, lost).

        With sampling on, ``sampler`` holds the sampler's counters (samples, errors, CPU seconds).
        """
        out = self._sender.stats()
        if self._sampler is not None:
            out["sampler"] = self._sampler.stats()
        return out

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None or exc is None:
            self.finish(self._pending_status or "finished", reason=self._pending_reason)
            return
        status, code, reason = _outcome(exc_type, exc)
        if status != "finished":
            emit_traceback(self._put_log, exc_type, exc, tb)
        self.finish(status, exit_code=code, reason=reason)

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, project={self.project!r}, name={self.name!r}, status={self.status!r})"

    # --------------------------------------------------------------- hooks

    def _install_hooks(self) -> None:
        self._prev_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        self._prev_thread_hook = threading.excepthook
        threading.excepthook = self._thread_excepthook
        atexit.register(self._atexit)
        self._prev_sigterm: Any = None
        self._sigterm_installed = False
        if threading.current_thread() is threading.main_thread():
            try:
                self._prev_sigterm = signal.getsignal(signal.SIGTERM)
                signal.signal(signal.SIGTERM, self._on_sigterm)
                self._sigterm_installed = True
            except (ValueError, OSError):  # not settable here (embedded interpreters)
                pass

    def _remove_hooks(self) -> None:
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._prev_excepthook
        if threading.excepthook == self._thread_excepthook:
            threading.excepthook = self._prev_thread_hook
        atexit.unregister(self._atexit)
        if self._sigterm_installed and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, OSError, TypeError):
                if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                    signal.signal(
                        signal.SIGTERM,
                        self._prev_sigterm if self._prev_sigterm is not None else signal.SIG_DFL,
                    )
                    self._sigterm_installed = False

    def _excepthook(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if not self._finished:
            emit_traceback(self._put_log, exc_type, exc, tb)
        with quiet():
            self._prev_excepthook(exc_type, exc, tb)
        if not self._finished:
            status, code, reason = _outcome(exc_type, exc)
            self.finish(status, exit_code=code, reason=reason)

    def _thread_excepthook(self, args: threading.ExceptHookArgs) -> None:
        if not self._finished and args.exc_type is not SystemExit and args.exc_value is not None:
            name = args.thread.name if args.thread is not None else "?"
            emit_traceback(
                self._put_log,
                args.exc_type,
                args.exc_value,
                args.exc_traceback,
                header=f"Exception in thread {name}:\n",
            )
            # The process goes on; the run ends failed when it does.
            self._pending_status = "failed"
            self._pending_reason = f"exception in thread {name}: {_describe(args.exc_value)}"
        with quiet():
            self._prev_thread_hook(args)

    def _atexit(self) -> None:
        self.finish(self._pending_status or "finished", reason=self._pending_reason)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        prev = self._prev_sigterm
        if not self._finished:
            self.finish("killed", exit_code=128 + signum, reason="SIGTERM")
        else:
            self._remove_hooks()
        if callable(prev):
            prev(signum, frame)
            return
        if prev == signal.SIG_IGN:
            return
        # Default action: die of the signal, as the launcher expects.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _silence(self) -> None:
        # Zero-length deques swallow appends: the hot path needs no "finished" check.
        for kind in self._buffer.queues:
            self._buffer.queues[kind] = deque(maxlen=0)
        self._mq = self._buffer.queues["metrics"]
        self._lq = self._buffer.queues["logs"]
        self._compile_log()

    def _after_fork_in_child(self) -> None:
        """In a forked child: send nothing, capture nothing, finish nothing."""
        self._finished = True
        self._ok = False
        self._sender.abandon()  # the parent's producer: librdkafka's threads are not in this process
        self._silence()
        if self._capture is not None:
            with contextlib.suppress(Exception):
                self._capture.uninstall(flush=False)  # a lock may have been held at the fork


def sync(settings: Settings | None = None, timeout_s: float = 60.0) -> int:
    """Send what earlier runs spooled to disk while the broker was unreachable.

    ``settings`` default to :func:`runstream.settings.load`.  Blocks up to
    about ``timeout_s``; returns the number of envelopes sent; raises
    :class:`producers.transport.SendError` when the broker cannot take them,
    leaving them in the spool.  ``runstream sync`` calls this.
    """
    return _sync_spool(settings or settings_mod.load(), timeout_s)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:512]


def _outcome(exc_type: type[BaseException], exc: BaseException) -> tuple[str, int | None, str]:
    """(status, exit code, reason) for a run ended by ``exc``."""
    if issubclass(exc_type, SystemExit):
        code = exc.code if isinstance(exc, SystemExit) else None
        if code is None or code == 0:
            return "finished", 0, ""
        return "failed", code if isinstance(code, int) else 1, f"SystemExit: {code}"[:512]
    if issubclass(exc_type, KeyboardInterrupt):
        return "killed", 130, "KeyboardInterrupt"
    return "failed", 1, _describe(exc)


def _after_fork_in_child() -> None:
    global _active, _active_lock
    _active_lock = threading.Lock()  # another thread may have held it at the fork
    run = _active
    _active = None
    if run is not None:
        run._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
