"""The worker's logging set-up: what its libraries log below its level costs nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import scaled

ROOT = Path(__file__).resolve().parents[2]

# Run in a child: setting up the worker's logging reconfigures the process's root logger.
_PROBE = """
import logging, sys
from runstream import settings
from streams.app import StreamSettings, create_app, make_worker

app, _ = create_app(StreamSettings(settings=settings.load({"data_dir": sys.argv[1], "kafka": "127.0.0.1:9"}, {})))
make_worker(app, sys.argv[2])._setup_logging()  # what the worker runs as it starts
print(logging.root.level, *(int(logging.getLogger(name).isEnabledFor(logging.DEBUG))
                             for name in ("aiokafka", "faust", "mode")))
"""


@pytest.mark.parametrize(("loglevel", "root"), [("warn", 30), ("error", 40)])
def test_worker_root_logger_keeps_its_level(tmp_path: Path, loglevel: str, root: int) -> None:
    """After the worker's logging set-up the root logger is at the worker's level, and debug calls of aiokafka,
    faust and mode are disabled (no record is built for each message sent or fetched)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path), loglevel],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(root), "0", "0", "0"]
