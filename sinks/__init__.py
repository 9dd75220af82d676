"""The ClickHouse sink: schema and migrations, the batched idempotent writer, the read queries.

``store`` is the only module that talks to ClickHouse; ``rows`` and
``segments`` are pure; ``writer`` moves clean topics into tables;
``queries`` answers the UI.  ``python -m sinks`` runs the writer alone.
"""
