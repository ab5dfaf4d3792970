"""``python -m dtaskq demo`` runs end to end on an embedded server, with real worker processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from dtaskq.demo_provider import MERGE_UNITS, TENANTS
from dtaskq.server import ENV_URL

SHARDS = sum(len(units) for units in TENANTS.values())


def _line(pattern: str, out: str) -> re.Match[str]:
    found = re.search(pattern, out, re.M)
    assert found, f"no line matches {pattern!r} in:\n{out}"
    return found


def test_demo_survives_a_killed_worker() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_URL}
    result = subprocess.run(
        [sys.executable, "-m", "dtaskq", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "embedded server" in out
    _line(rf"^task demo/merge-files version \d+: FINISHED, {MERGE_UNITS}/{MERGE_UNITS} units", out)
    _line(rf"^task demo/reindex-tenants version \d+: FINISHED, {SHARDS}/{SHARDS} units", out)

    # Every unit done once: the provider files each result under its unit id, and the files
    # of all nodes add up to the units of both tasks.
    per_node = _line(r"^units done per node: (.+); total (\d+) of (\d+)$", out)
    counts = dict(re.findall(r"(node-\d) (\d+)", per_node[1]))
    assert set(counts) == {"node-1", "node-2", "node-3"}, out
    assert sum(map(int, counts.values())) == int(per_node[2]) == MERGE_UNITS + SHARDS, out
    assert int(per_node[3]) == MERGE_UNITS + SHARDS, out
    assert int(counts["node-1"]) > 0 and int(counts["node-3"]) > 0, out

    # node-2 died holding units; the others ran them again after its leases ran out.
    held = int(_line(r"^killed: node-2 at [\d.]+ s holding (\d+) units?$", out)[1])
    assert held > 0, out
    reclaim = _line(r"^reclaim time: ([\d.]+) s \(.+ on (node-\d) with token (\d+)\)$", out)
    assert 0 < float(reclaim[1]) < 30 and reclaim[2] != "node-2" and int(reclaim[3]) >= 2, out
    finishers = dict(
        re.findall(r"(node-\d) (\d+)", _line(r"^units of node-2 finished by: (.+)$", out)[1])
    )
    assert set(finishers) <= {"node-1", "node-3"} and sum(map(int, finishers.values())) == held
    _line(r"^all units of node-2 done [\d.]+ s after the kill$", out)

    _line(r"^barrier acks: node-1 prepare ok, post ok; node-3 prepare ok, post ok$", out)
    _line(r"^workers stopped with SIGTERM: node-1 exit 0, node-3 exit 0$", out)
    _line(r"^result: OK$", out)
    # No worker outlives the demo.
    for pid in re.findall(r"^started node-\d \(pid (\d+)\)$", out, re.M):
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"worker {pid} is still running")
