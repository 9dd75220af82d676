"""``python -m runstream.topics_admin``: create the deployment's topics (distributed mode).

Settings: ``--kafka`` > ``RUNSTREAM_KAFKA`` > default; ``--topic-prefix`` >
``RUNSTREAM_TOPIC_PREFIX``.  Existing topics are left as they are.
"""

from __future__ import annotations

import argparse
import asyncio

from runstream import kafka
from runstream import settings as settings_mod
from runstream.topics import DEFAULT_APP_ID, DEFAULT_PARTITIONS, changelog_topics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runstream.topics_admin", description=__doc__)
    parser.add_argument("--kafka")
    parser.add_argument("--topic-prefix")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--app-id", default=DEFAULT_APP_ID, help="the stream workers' app id (table changelogs)")
    parser.add_argument("--wait-s", type=float, default=60.0, help="how long to wait for the broker")
    args = parser.parse_args(argv)
    settings = settings_mod.load({"kafka": args.kafka, "topic_prefix": args.topic_prefix})

    async def create() -> list[str]:
        await kafka.wait_for_broker(settings.kafka, args.wait_s)
        return await kafka.ensure_topics(settings.kafka, names, args.partitions)

    names = settings.topics.all() + changelog_topics(args.app_id)
    created = asyncio.run(create())
    print(f"Topics ready. created={len(created)} total={len(names)}")


if __name__ == "__main__":
    main()
