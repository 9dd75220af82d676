"""``python -m streams``: run one stream-processing worker.

Settings: flags > environment (RUNSTREAM_KAFKA, RUNSTREAM_TOPIC_PREFIX,
RUNSTREAM_DATA_DIR) > defaults.  Several workers share the raw topics'
partitions through their consumer group.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runstream import settings as settings_mod
from runstream.topics import DEFAULT_APP_ID, DEFAULT_PARTITIONS
from streams.app import StreamSettings, run_worker
from streams.detect import DetectorSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streams", description=__doc__)
    parser.add_argument("--kafka", help="bootstrap servers host:port (RUNSTREAM_KAFKA)")
    parser.add_argument("--topic-prefix", help="topic prefix (RUNSTREAM_TOPIC_PREFIX)")
    parser.add_argument("--data-dir", help="state directory (RUNSTREAM_DATA_DIR)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=DEFAULT_PARTITIONS,
        help=f"partitions of the stream topics and table changelogs (default {DEFAULT_PARTITIONS})",
    )
    parser.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])
    parser.add_argument("--ready-file", type=Path, help="rewritten with the assigned partitions after each rebalance")
    parser.add_argument(
        "--app-id",
        default=DEFAULT_APP_ID,
        help="consumer group and table namespace; workers with one app id share the work",
    )
    parser.add_argument("--no-detect", action="store_true", help="validate only: no tables, windows or alerts")
    parser.add_argument(
        "--crashed-after-s",
        type=float,
        default=DetectorSettings.crashed_after_s,
        help="a running run without a heartbeat for this long raises 'stalled'",
    )
    parser.add_argument(
        "--check-interval-s",
        type=float,
        default=5.0,
        help="how often the run-wide detectors (stalled, silent rank, straggler) run",
    )
    parser.add_argument(
        "--session-timeout-s",
        type=float,
        default=30.0,
        help="how long the group waits for a silent worker before moving its partitions",
    )
    args = parser.parse_args(argv)
    settings = settings_mod.load({"kafka": args.kafka, "topic_prefix": args.topic_prefix, "data_dir": args.data_dir})
    run_worker(
        StreamSettings(
            settings=settings,
            partitions=args.partitions,
            app_id=args.app_id,
            detect=not args.no_detect,
            detectors=DetectorSettings(crashed_after_s=args.crashed_after_s),
            check_interval_s=args.check_interval_s,
            session_timeout_s=args.session_timeout_s,
        ),
        loglevel=args.loglevel,
        ready_file=args.ready_file,
    )


if __name__ == "__main__":
    main()
