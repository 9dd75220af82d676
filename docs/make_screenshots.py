"""Regenerate docs/*.png: start `runstream up`, train the example twice, log an evaluation, photograph the page.

Views: the run list, a run (overview and metrics), a log search with its histogram, resources
(host charts; GPU charts appear where NVML is present), evaluation, and two runs compared.

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

#: Epochs per example run: long enough (about 3 s on a fast day of the dev machine) for the sampler, one
#: sample a second, to draw resource charts with four points or more and the overview to have a CPU rate.
EPOCHS = 100

#: A small 3-class evaluation logged through the SDK (scores from a fixed seed).
EVAL = r"""
import random, runstream
rng = random.Random(0)
labels = ["cat", "dog", "bird"]
y_true = [rng.randrange(3) for _ in range(600)]
scores = []
for t in y_true:
    s = [rng.random() * 0.6 for _ in labels]
    s[t] += rng.random() * 0.9
    total = sum(s)
    scores.append([v / total for v in s])
y_pred = [max(range(3), key=lambda k: s[k]) for s in scores]
with runstream.init(project="examples", name="spirals-eval", config={"checkpoint": "epoch-12"},
                    tags=["eval"]) as run:
    run.log_confusion_matrix(y_true, y_pred, labels, name="validation confusion matrix")
    run.log_pr_curve(y_true, scores, labels, name="validation PR curve")
    print("evaluation logged")
"""
CHROMIUM = next(
    (
        p
        for p in (
            "/usr/lib/chromium/chromium-headless-shell",
            "/usr/lib/chromium/chromium",
            shutil.which("chromium") or "",
        )
        if p and os.path.exists(p)
    ),
    None,
)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        up = subprocess.Popen(
            [sys.executable, "-m", "runstream", "up", "--data-dir", tmp, "--port", "0", "--kafka-port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
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
            for extra in (["--hidden", "32", "--lr", "1e-2"], ["--hidden", "64"]):
                subprocess.run(
                    [sys.executable, "examples/train_spirals.py", "--epochs", str(EPOCHS), *extra],
                    cwd=ROOT,
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            subprocess.run([sys.executable, "-c", EVAL], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
            time.sleep(3)
            req = urllib.request.Request(f"{url}/api/runs", headers={"Authorization": f"Bearer {token}"})
            runs = {r["name"]: r["id"] for r in json.loads(urllib.request.urlopen(req).read())["runs"]}
            run_id, eval_id = runs["spirals-h64"], runs["spirals-eval"]
            docs = ROOT / "docs"
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
                )
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{url}/?token={token}")
                page.wait_for_timeout(1500)
                page.screenshot(path=str(docs / "runs.png"))
                page.goto(f"{url}/runs/{run_id}")
                page.wait_for_timeout(1500)
                page.mouse.wheel(0, 3000)  # charts load as they scroll into view
                page.wait_for_timeout(1500)
                page.screenshot(path=str(docs / "run.png"), full_page=True)
                page.goto(f"{url}/runs/{run_id}/logs?q=val_acc")
                page.wait_for_timeout(2000)
                page.locator("#logs").scroll_into_view_if_needed()
                page.evaluate("document.getElementById('logs').scrollIntoView()")
                page.screenshot(path=str(docs / "logs.png"))
                page.goto(f"{url}/runs/{run_id}/resources")
                page.wait_for_timeout(2500)
                page.screenshot(path=str(docs / "resources.png"), full_page=True)
                page.goto(f"{url}/runs/{eval_id}/evaluation")
                page.wait_for_timeout(2000)
                page.screenshot(path=str(docs / "evaluation.png"), full_page=True)
                page.goto(f"{url}/compare?runs={runs['spirals-h32']},{run_id}&metric=val_acc")
                page.wait_for_timeout(2000)
                page.screenshot(path=str(docs / "compare.png"))
                browser.close()
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(120)
    print("wrote docs/runs.png run.png logs.png resources.png evaluation.png compare.png")


if __name__ == "__main__":
    main()
