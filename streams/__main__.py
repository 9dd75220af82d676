"""``python -m streams``: run one stream-processing worker.

Settings: flags > environment (RUNSTREAM_KAFKA, RUNSTREAM_TOPIC_PREFIX,
RUNSTREAM_DATA_DIR) > defaults.  Several workers share the raw topics'
partitions through their consumer group.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from runstream import settings as settings_mod
from streams.app import StreamSettings, run_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streams", description=__doc__)
    parser.add_argument("--kafka", help="bootstrap servers host:port (RUNSTREAM_KAFKA)")
    parser.add_argument("--topic-prefix", help="topic prefix (RUNSTREAM_TOPIC_PREFIX)")
    parser.add_argument("--data-dir", help="state directory (RUNSTREAM_DATA_DIR)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the raw topics")
    parser.add_argument("--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])
    parser.add_argument("--ready-file", type=Path, help="written once partitions are assigned")
    args = parser.parse_args(argv)
    settings = settings_mod.load(
        {"kafka": args.kafka, "topic_prefix": args.topic_prefix, "data_dir": args.data_dir}
    )
    run_worker(
        StreamSettings(settings=settings, partitions=args.partitions),
        loglevel=args.loglevel,
        ready_file=args.ready_file,
    )


if __name__ == "__main__":
    main()
