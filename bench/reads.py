"""What a worker's scheduler reads, on a large task of named units shared by several nodes.

A task of ``--units`` named units (100 000 by default) is claimed and completed round-robin by
``--nodes`` nodes (4), so each owns a share. Then, per node, the read a scheduler makes on an
event and the read its periodic resync makes of the partition, each ``--reads`` times: the
server's time per read (INFO commandstats of the calls sent), the client's CPU per read, and
the bytes of the reply. A dtaskq that has node views reads ``task_view`` on an event and
``task_summaries`` on a resync; an older one reads ``get_task`` and ``list_tasks``, so the same
command measures an older checkout too (``PYTHONPATH=<checkout> python bench/reads.py``).

Run from the repository root: ``python bench/reads.py [--server redis|valkey]``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from core import delete_prefix, new_parser, parse, positive, publish, run_report, server, unit_count

import dtaskq

NAMESPACE = "reads"
RESULTS = Path(__file__).resolve().parent / "results" / "reads.json"
_SENT = ("fcall", "fcall_ro", "evalsha", "eval")


def _script_usec(r: redis.Redis) -> tuple[int, int]:
    stats = r.info("commandstats")
    calls = sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in _SENT)
    usec = sum(int(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in _SENT)
    return calls, usec


def measure(r: redis.Redis, reads: int, read: Callable[[], object]) -> dict[str, float]:
    """Server time, round trips and client CPU per ``read()``."""
    calls0, usec0 = _script_usec(r)
    cpu = time.process_time()
    for _ in range(reads):
        read()
    cpu = time.process_time() - cpu
    calls1, usec1 = _script_usec(r)
    return {
        "server_ms": (usec1 - usec0) / reads / 1000,
        "round_trips": (calls1 - calls0) / reads,
        "client_cpu_ms": cpu / reads * 1000,
    }


def prepare(client: dtaskq.Client, units: int, nodes: int) -> dtaskq.TaskRef:
    """A STARTED task whose units are all complete but one, owned round-robin by the nodes."""
    ids = [f"unit-{i:06d}" for i in range(units)]
    ref = client.add_task(NAMESPACE, "big", units=ids, ack_barrier=True)
    for i, unit in enumerate(ids[:-1]):
        client.complete_unit(ref, f"node-{i % nodes}", unit)
    return ref


def run(
    client: dtaskq.Client, r: redis.Redis, units: int, nodes: int, reads: int
) -> dict[str, Any]:
    """Every measure."""
    prepare(client, units, nodes)
    node = "node-0"
    if hasattr(client, "task_view"):
        event = measure(r, reads, lambda: client.task_view(NAMESPACE, "big", node))
        resync = measure(r, reads, lambda: client.task_summaries(NAMESPACE, node))
        kind = "task_view / task_summaries"
    else:
        event = measure(r, reads, lambda: client.get_task(NAMESPACE, "big"))
        resync = measure(r, reads, lambda: client.list_tasks(NAMESPACE))
        kind = "get_task / list_tasks"
    return {"reads": kind, "event read": event, "resync of the partition": resync}


def table(results: dict[str, Any]) -> str:
    """The figures as text."""
    lines = [f"reads: {results['reads']}"]
    for name in ("event read", "resync of the partition"):
        m = results[name]
        lines.append(
            f"{name:24}  server {m['server_ms']:8.3f} ms  client CPU {m['client_cpu_ms']:8.3f} ms"
            f"  round trips {m['round_trips']:.0f}"
        )
    return "\n".join(lines)


def main() -> int:
    """Measures, prints and saves the figures; returns the exit code."""
    p = new_parser(__doc__, RESULTS)
    p.add_argument("--units", type=unit_count, default=100_000, help="units (100000)")
    p.add_argument("--nodes", type=positive, default=4, help="nodes owning them (4)")
    p.add_argument("--reads", type=positive, default=5, help="reads of each kind (5)")
    args = parse(p, None)
    load = os.getloadavg()[0]
    began = time.perf_counter()
    with server(args.server) as (url, described):
        prefix = f"bench-reads-{time.time_ns()}"
        with dtaskq.Client.from_url(url, prefix=prefix) as client, redis.Redis.from_url(url) as r:
            results = run(client, r, args.units, args.nodes, args.reads)
            delete_prefix(r, prefix)
    params = {"units": args.units, "nodes": args.nodes, "reads": args.reads}
    report = run_report(described, load, params, results, began)
    return publish(report, table(results), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
