"""The ``runstream`` command line.

Settings precedence: flags > environment variables > defaults (see
:mod:`runstream.settings`).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time
from types import FrameType

from runstream import __version__
from runstream import settings as settings_mod
from runstream.errors import RunstreamError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _cmd_up(args: argparse.Namespace) -> int:
    from runstream.embedded import Embedded, free_port

    settings = settings_mod.load({"data_dir": args.data_dir, "topic_prefix": args.topic_prefix})
    port = args.port or free_port(args.host if args.host in LOOPBACK else "127.0.0.1")
    system = Embedded(settings, host=args.host, port=port, kafka_port=args.kafka_port, partitions=args.partitions)
    stopping = {"signal": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.host not in LOOPBACK:
        print(
            f"runstream: warning: listening on {args.host}, not loopback; the token is the only protection",
            file=sys.stderr,
        )
    print(f"runstream {__version__}: starting in {system.data_dir} ...", flush=True)
    try:
        system.start()
    except RunstreamError as exc:
        print(f"runstream: could not start: {exc}", file=sys.stderr, flush=True)
        system.stop()
        return 1
    print(f"runstream is up: {system.url}/?token={system.token}", flush=True)
    print(f"  Kafka: {system.kafka}  (trainers: RUNSTREAM_KAFKA={system.kafka})", flush=True)
    print(f"  data: {system.data_dir}  logs: {system.data_dir / 'logs'}", flush=True)
    print("  Ctrl-C stops it, storing everything received first.", flush=True)
    threading.Thread(target=_replay_spool, args=(settings, system.kafka), daemon=True).start()
    failed = None
    while not stopping["signal"]:
        failed = system.failed_child()
        if failed is not None:
            print(
                f"runstream: {failed.name} exited with code {failed.proc.returncode}; stopping "
                f"(see {system.data_dir / 'logs' / (failed.name + '.log')})",
                file=sys.stderr,
                flush=True,
            )
            break
        time.sleep(0.2)
    print("runstream: stopping: draining what the broker holds into ClickHouse ...", flush=True)
    ok = system.stop()
    print("runstream: stopped." if ok else "runstream: stopped, with errors (see the logs).", flush=True)
    return 0 if ok and failed is None else 1


def _replay_spool(settings: settings_mod.Settings, kafka: str) -> None:
    """Send what trainers spooled under this data dir while no broker listened."""
    from producers.run import sync

    try:
        sent = sync(dataclasses.replace(settings, kafka=kafka), timeout_s=30.0)
    except Exception as exc:  # noqa: BLE001 - the spool stays for `runstream sync`
        print(
            f"runstream: spool not replayed ({type(exc).__name__}: {exc}); run `runstream sync`",
            file=sys.stderr,
            flush=True,
        )
        return
    if sent:
        print(f"runstream: replayed {sent} spooled batches", flush=True)


def _cmd_sync(args: argparse.Namespace) -> int:
    from producers.run import sync

    settings = settings_mod.load({"kafka": args.kafka, "data_dir": args.data_dir})
    try:
        sent = sync(settings, timeout_s=args.timeout)
    except Exception as exc:  # noqa: BLE001 - report any failure and keep the spool
        print(f"runstream sync: nothing lost, the spool is kept: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"runstream sync: sent {sent} spooled batches to {settings.kafka}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from producers.launch import launch

    command = list(args.cmd)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("runstream run: no command given (usage: runstream run [options] -- CMD [ARGS...])", file=sys.stderr)
        return 2
    try:
        return launch(command, project=args.project, name=args.name, kafka=args.kafka, use_pty=not args.no_pty)
    except OSError as exc:  # the command could not be started: no run was created
        print(f"runstream run: cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126


def _cmd_logs(args: argparse.Namespace) -> int:
    from ui.terminal import logs_command

    settings = settings_mod.load({"url": args.url, "token": args.token})
    return logs_command(
        settings.url,
        settings.token,
        args.run,
        follow_=args.follow,
        grep=args.grep,
        since=args.since,
        node=args.node,
        tail=args.tail,
    )


def _cmd_runs(args: argparse.Namespace) -> int:
    from ui.terminal import runs_command

    settings = settings_mod.load({"url": args.url, "token": args.token})
    return runs_command(settings.url, settings.token, project=args.project)


def _cmd_status(args: argparse.Namespace) -> int:
    from ui.terminal import status_command

    settings = settings_mod.load({"url": args.url, "token": args.token})
    return status_command(settings.url, settings.token)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runstream",
        description="Live observability for GPU training jobs.",
        epilog="Settings: flags > environment (RUNSTREAM_KAFKA, RUNSTREAM_CLICKHOUSE, "
        "RUNSTREAM_DATA_DIR, RUNSTREAM_TOKEN, RUNSTREAM_TOPIC_PREFIX) > defaults.",
    )
    parser.add_argument("--version", action="version", version=f"runstream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    up = sub.add_parser(
        "up",
        help="start everything embedded: broker, stream processors, ClickHouse sink, UI",
        description="Start the whole system on this machine (no Docker). Prints the UI URL with "
        "its token when ready; Ctrl-C or SIGTERM stops it after storing everything received.",
    )
    up.add_argument("--data-dir", help="where ClickHouse data and logs live (RUNSTREAM_DATA_DIR, default ~/.runstream)")
    up.add_argument("--host", default="127.0.0.1", help="UI/API address (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=8080, help="UI/API port (default 8080; 0 = any free port)")
    up.add_argument(
        "--kafka-port", type=int, default=9092, help="broker port on 127.0.0.1 (default 9092; 0 = any free port)"
    )
    up.add_argument("--topic-prefix", help="topic prefix (RUNSTREAM_TOPIC_PREFIX, default runstream.)")
    up.add_argument(
        "--partitions",
        type=_positive_int,
        default=1,
        help="partitions per topic (default 1: the embedded system runs one stream worker and one "
        "sink, and every partition costs the broker CPU on each fetch)",
    )
    up.set_defaults(func=_cmd_up)

    sync = sub.add_parser(
        "sync",
        help="send what the SDK spooled to disk while the broker was unreachable",
        description="Replay the SDK's on-disk spool (batches that could not reach the broker) in order.",
    )
    sync.add_argument("--kafka", help="bootstrap servers host:port (RUNSTREAM_KAFKA)")
    sync.add_argument("--data-dir", help="where the spool lives (RUNSTREAM_DATA_DIR)")
    sync.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the broker (default 60)")
    sync.set_defaults(func=_cmd_sync)

    logs = sub.add_parser(
        "logs",
        help="search a run's logs, or follow them live, from a terminal",
        description="Print a run's stored log lines (colours kept), or with --follow the newest ones and "
        "then every new line as it arrives; Ctrl-C stops. Talks to RUNSTREAM_URL with RUNSTREAM_TOKEN.",
    )
    logs.add_argument("run", help="the run id")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (live tail)")
    logs.add_argument("--grep", help="only lines containing this text (case-insensitive)")
    logs.add_argument(
        "--since",
        help="only lines since: 1h, 24h, 7d, RFC 3339 or epoch seconds (with --follow: "
        "every stored line since then, then the live ones)",
    )
    logs.add_argument("--node", help="only lines of this node")
    logs.add_argument(
        "--tail",
        type=int,
        default=100,
        help="with --follow: how many stored lines first (default 100; with --since, every line since then)",
    )
    logs.add_argument("--url", help="server base URL (RUNSTREAM_URL)")
    logs.add_argument("--token", help="access token (RUNSTREAM_TOKEN)")
    logs.set_defaults(func=_cmd_logs)

    runs = sub.add_parser(
        "runs", help="list runs", description="List runs: status, id, name, project, start, duration."
    )
    runs.add_argument("--project", help="only this project")
    runs.add_argument("--url", help="server base URL (RUNSTREAM_URL)")
    runs.add_argument("--token", help="access token (RUNSTREAM_TOKEN)")
    runs.set_defaults(func=_cmd_runs)

    status = sub.add_parser(
        "status",
        help="what the server's parts counted: sink, live feed, websocket clients, dead letters",
        description="Print the health report of RUNSTREAM_URL (no token needed) and, with RUNSTREAM_TOKEN, the "
        "newest dead letters by topic and reason. Exit code 0 when everything works, 1 when a part does not, "
        "2 when the server cannot be reached.",
    )
    status.add_argument("--url", help="server base URL (RUNSTREAM_URL)")
    status.add_argument("--token", help="access token (RUNSTREAM_TOKEN)")
    status.set_defaults(func=_cmd_status)

    run = sub.add_parser(
        "run",
        help="run any command as a tracked run: its output becomes logs, its exit code the status",
        description="Run CMD under a pseudo-terminal as a tracked run: everything it prints is shown "
        "and stored as log lines, its process tree is sampled, its exit code becomes the run's final "
        "status (0 finished, non-zero failed, signal killed) and is this command's exit code.",
    )
    run.add_argument("--project", help="project of the run (RUNSTREAM_PROJECT, default 'default')")
    run.add_argument("--name", help="name of the run (default: the command's name)")
    run.add_argument("--kafka", help="bootstrap servers host:port (RUNSTREAM_KAFKA)")
    run.add_argument(
        "--no-pty", action="store_true", help="use two pipes instead of a terminal, keeping stdout and stderr apart"
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sys.exit(args.func(args))
    except RunstreamError as exc:
        print(f"runstream: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
