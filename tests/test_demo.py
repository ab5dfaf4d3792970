"""``python -m dtaskq demo`` runs end to end on an embedded server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from dtaskq.server import ENV_URL


def test_demo_finishes_and_retries_the_flaky_unit() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_URL}
    result = subprocess.run(
        [sys.executable, "-m", "dtaskq", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "embedded server" in out
    assert re.search(r"^task demo/reindex-products version \d+: FINISHED$", out, re.M), out
    assert re.search(r"b-2 failed on attempt 1 \(will be retried\)", out), out
    # Final table: the flaky unit completed on its second attempt, every other on its first.
    rows = re.findall(r"^(\w-\d) +tenant-[ab] +node-[123] +(\w+) +(\d+) +(\d+)%", out, re.M)
    assert sorted(rows) == sorted(
        (unit, "COMPLETED", "2" if unit == "b-2" else "1", "100")
        for unit in ("a-1", "a-2", "a-3", "a-4", "a-5", "b-1", "b-2", "b-3", "b-4")
    ), out
