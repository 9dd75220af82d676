"""The architecture rules of style.md, checked by import-linter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    """Stages do not import each other and each I/O library stays in its adapter."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_importing_runstream_is_cheap() -> None:
    """`import runstream` loads neither the SDK's Kafka client nor any server library."""
    code = (
        "import sys, runstream; heavy = [m for m in ('aiokafka', 'faust', 'chdb', 'clickhouse_connect', "
        "'starlette', 'producers', 'numpy') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
