"""``bench/jobs.py --quick`` runs end to end: real workers drain real jobs and it prints every
figure (no speed is checked: the benchmark measures, the tests check that it works)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dtaskq.server import ENV_URL

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_quick_run_prints_its_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_URL}
    out = tmp_path / "jobs.json"
    result = subprocess.run(
        [sys.executable, str(BENCH / "jobs.py"), "--quick", "--json", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    text = result.stdout
    assert result.returncode == 0, text + result.stderr
    for figure in (
        "enqueue, one call per job",
        "enqueue_many",
        "Redis memory per pending job",
        "burn-down, 500 sync no-op jobs, 1 worker(s) x concurrency 4",
        "steady, 1 worker(s) x concurrency 4",
        "enqueue -> handler start, 20 sequential jobs",
        "delay=0.2 s: due -> handler start (3 jobs)",
    ):
        assert figure in text, f"no {figure!r} in:\n{text}"

    report = json.loads(out.read_text())["runs"]
    (run,) = report.values()
    results = run["results"]
    assert results["enqueue"]["single"]["jobs"] == 200
    assert results["enqueue"]["many"]["jobs"] == 500
    (config,) = results["configs"]
    assert (config["workers"], config["concurrency"]) == (1, 4)
    # Every job was read back COMPLETED, from the one worker, which stopped cleanly.
    assert config["burn"]["per_node"] == {"node-1": 500}
    assert config["steady"]["completed"] > 0
    assert config["latency"]["count"] == 20
    assert config["delayed"]["handler"]["count"] == 3
    assert config["exits"] == {"node-1": 0}
    # --json prints the same report after the table.
    assert json.loads(text[text.index("\n{") :])["results"]["configs"][0]["burn"]["jobs"] == 500
