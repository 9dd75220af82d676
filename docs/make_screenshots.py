"""Regenerate docs/*.png: start `runstream up`, train the example, photograph the page.

    python docs/make_screenshots.py

Needs Playwright (pip) and Debian's Chromium (apt: chromium-headless-shell).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/chromium",
                             shutil.which("chromium") or "") if p and os.path.exists(p)), None)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        up = subprocess.Popen([sys.executable, "-m", "runstream", "up", "--data-dir", tmp, "--port", "0",
                               "--kafka-port", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        url = token = kafka = ""
        assert up.stdout is not None
        for line in up.stdout:
            if m := re.search(r"(http://\S+?)/\?token=(\S+)", line):
                url, token = m.groups()
            if m := re.search(r"Kafka: (\S+)", line):
                kafka = m.group(1)
                break
        try:
            env = {**os.environ, "RUNSTREAM_KAFKA": kafka, "PYTHONPATH": str(ROOT)}
            subprocess.run([sys.executable, "examples/train_spirals.py", "--epochs", "12"], cwd=ROOT, env=env,
                           check=True, stdout=subprocess.DEVNULL)
            time.sleep(2)
            req = urllib.request.Request(f"{url}/api/runs", headers={"Authorization": f"Bearer {token}"})
            run_id = json.loads(urllib.request.urlopen(req).read())["runs"][0]["id"]
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{url}/?token={token}")
                page.wait_for_timeout(1500)
                page.screenshot(path=str(ROOT / "docs" / "runs.png"))
                page.goto(f"{url}/runs/{run_id}")
                page.wait_for_timeout(2500)
                page.screenshot(path=str(ROOT / "docs" / "run.png"), full_page=True)
                page.goto(f"{url}/runs/{run_id}/logs?q=val_acc")
                page.wait_for_timeout(2000)
                page.screenshot(path=str(ROOT / "docs" / "logs.png"))
                browser.close()
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(120)
    print("wrote docs/runs.png docs/run.png docs/logs.png")


if __name__ == "__main__":
    main()
