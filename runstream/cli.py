"""The ``runstream`` command line.

Settings precedence: flags > environment variables > defaults (see
:mod:`runstream.settings`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from runstream import __version__
from runstream import settings as settings_mod
from runstream.errors import RunstreamError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _cmd_up(args: argparse.Namespace) -> int:
    from runstream.embedded import Embedded, free_port

    settings = settings_mod.load({"data_dir": args.data_dir, "topic_prefix": args.topic_prefix})
    port = args.port or free_port(args.host if args.host in LOOPBACK else "127.0.0.1")
    system = Embedded(settings, host=args.host, port=port, kafka_port=args.kafka_port)
    stopping = {"signal": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.host not in LOOPBACK:
        print(f"runstream: warning: listening on {args.host}, not loopback; the token is the only "
              "protection", file=sys.stderr)
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
    failed = None
    while not stopping["signal"]:
        failed = system.failed_child()
        if failed is not None:
            print(f"runstream: {failed.name} exited with code {failed.proc.returncode}; stopping "
                  f"(see {system.data_dir / 'logs' / (failed.name + '.log')})", file=sys.stderr, flush=True)
            break
        time.sleep(0.2)
    print("runstream: stopping: draining what the broker holds into ClickHouse ...", flush=True)
    ok = system.stop()
    print("runstream: stopped." if ok else "runstream: stopped, with errors (see the logs).", flush=True)
    return 0 if ok and failed is None else 1


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
    up.add_argument("--data-dir", help="where ClickHouse data and logs live (RUNSTREAM_DATA_DIR, "
                    "default ~/.runstream)")
    up.add_argument("--host", default="127.0.0.1", help="UI/API address (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=8080, help="UI/API port (default 8080; 0 = any free port)")
    up.add_argument("--kafka-port", type=int, default=9092,
                    help="broker port on 127.0.0.1 (default 9092; 0 = any free port)")
    up.add_argument("--topic-prefix", help="topic prefix (RUNSTREAM_TOPIC_PREFIX, default runstream.)")
    up.set_defaults(func=_cmd_up)
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
