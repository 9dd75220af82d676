"""The trainer-side SDK; users reach it as ``runstream.init`` (loaded lazily).

Data flow inside one training process, one module per role::

    run.log / print / logging   -> run.py, capture.py   (hot path: check, append)
    bounded per-kind queues     -> buffer.py            (drop newest, counted)
    envelopes (<= 1000 records) -> batch.py             (pure; runstream.wire)
    Kafka, acks, retry, spool   -> sender.py, spool.py  (own thread and loop)

``identity.py`` derives run id, node and rank from the launcher's
environment; ``options.py`` holds the knobs.  Importing this package
imports nothing else.
"""
