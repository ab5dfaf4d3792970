"""Benchmark of the worker runtime: real ``dtaskq worker`` processes on range tasks.

Starts ``--workers`` ``dtaskq worker`` processes against an embedded server, each running
``bench/noop_provider.py`` (units that do nothing) on ``--threads`` unit threads, and measures:

(a) throughput: a ``--units``-unit range task (``workers_hint`` = workers) from ``add_task``
    until it is FINISHED; per node its units and its rate over its own first to last unit;
    the spread between nodes (max/min and stdev/mean of units per node); the time from the
    add to the first unit begun; with the server's CPU and script time and the workers' CPU;
(b) kill -9: a fresh task of the same size; once ``--kill-at`` of it is done, one worker is
    SIGKILLed while it holds units (lease ``--lease-ms``); the time from the kill until the
    first of those units begins again elsewhere (token 2), and until all of them are done.

Like ``core.py``, it runs on an embedded server, or on ``$DTASKQ_REDIS_URL`` under a key prefix
of its own that is deleted afterwards; prints a table and stores the figures in
``bench/results/runtime.json`` under the server kind.

Run from the repository root: ``python bench/runtime.py [--server redis|valkey]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis
from core import (
    Meter,
    Sample,
    delete_prefix,
    markdown,
    new_parser,
    parse,
    positive,
    publish,
    run_report,
    server,
)

import dtaskq
from dtaskq.server import ENV_URL
from dtaskq.worker.processes import WorkerProcesses

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "runtime.json"
NAMESPACE = "bench-runtime"
POLL_S = 0.02
DEADLINE_S = 120.0
STOP_TIMEOUT_S = 30.0
WARM_UP_UNITS = 2_000
KILL_ATTEMPTS = 5
"""Kills tried until the victim dies holding units (its last reports may complete them)."""


def node_ids(workers: int) -> list[str]:
    """``node-1`` .. ``node-<workers>``."""
    return [f"node-{i}" for i in range(1, workers + 1)]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_cpu_s(workers: WorkerProcesses) -> float:
    """CPU seconds used so far by the live workers."""
    return sum(proc_cpu_s(p.pid) for p in workers.procs.values() if p.poll() is None)


def noop_keys(prefix: str) -> str:
    """Where the provider keeps its records: under the bench's key prefix."""
    return f"{prefix}:noop"


def stats(
    r: redis.Redis, prefix: str, task_id: str, nodes: Sequence[str]
) -> dict[str, dict[str, float]]:
    """The provider's counts of ``task_id``: node -> ``{"units", "first", "last"}``."""
    found = {}
    for node in nodes:
        raw: Any = r.hgetall(f"{noop_keys(prefix)}:stats:{task_id}:{node}")
        if raw:
            found[node] = {k.decode(): float(v) for k, v in raw.items()}
    return found


def notes(
    r: redis.Redis, prefix: str, what: str, task_id: str
) -> dict[str, tuple[str, int, float]]:
    """The provider's ``retaken`` or ``redone`` records: unit -> (node, token, unix time)."""
    raw: Any = r.hgetall(f"{noop_keys(prefix)}:{what}:{task_id}")
    found = {}
    for unit, entry in raw.items():
        node, token, at = entry.decode().split()
        found[unit.decode()] = (node, int(token), float(at))
    return found


def wait_finished(client: dtaskq.Client, ref: dtaskq.TaskRef) -> dtaskq.Task:
    """Polls the task until it is terminal; raises RuntimeError past the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        task = client.get_task(ref.namespace, ref.task_id)
        if task is not None and task.status.is_terminal:
            return task
        time.sleep(POLL_S)
    raise RuntimeError(f"task {ref.task_id} did not finish within {DEADLINE_S:g} s")


def wait_counted(
    r: redis.Redis, prefix: str, task_id: str, nodes: Sequence[str], units: int
) -> None:
    """Waits for the provider's last flush: its counts reach ``units`` (a few tenths of a
    second after the task finished)."""
    deadline = time.monotonic() + 5.0
    while sum(s["units"] for s in stats(r, prefix, task_id, nodes).values()) < units:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the nodes counted fewer than {units} units of {task_id}")
        time.sleep(POLL_S)


def add(client: dtaskq.Client, task_id: str, args: argparse.Namespace, units: int) -> Any:
    """A range task of ``units`` units, one region per worker."""
    return client.add_task(
        NAMESPACE,
        task_id,
        unit_count=units,
        workers_hint=args.workers,
        lease_ms=args.lease_ms,
        max_attempts=5,
    )


def bench_throughput(
    client: dtaskq.Client,
    r: redis.Redis,
    prefix: str,
    workers: WorkerProcesses,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """(a) One task of ``args.units`` no-op units, from add to FINISHED."""
    nodes = list(workers.procs)
    cpu0 = workers_cpu_s(workers)
    with Meter(r) as meter:
        added = time.time()
        ref = add(client, "throughput", args, args.units)
        task = wait_finished(client, ref)
    cpu = workers_cpu_s(workers) - cpu0
    assert task.status is dtaskq.TaskStatus.FINISHED, task
    assert task.counts[dtaskq.UnitStatus.COMPLETED] == args.units, task.counts
    wait_counted(r, prefix, ref.task_id, nodes, args.units)
    per_node = stats(r, prefix, ref.task_id, nodes)
    counts = [per_node.get(n, {}).get("units", 0.0) for n in nodes]
    sample = meter.result()
    # The bench's own CPU is its polling: the workers' CPU replaces it.
    sample = Sample(sample.wall_s, cpu, sample.server_cpu_s, sample.script_s)
    return {
        "units": args.units,
        "wall_s": sample.wall_s,
        "units_per_s": args.units / sample.wall_s,
        "first_unit_after_s": min(s["first"] for s in per_node.values()) - added,
        "sample": asdict(sample),
        "per_unit_us": {
            "script": sample.script_s / args.units * 1e6,
            "server_cpu": sample.server_cpu_s / args.units * 1e6,
            "workers_cpu": cpu / args.units * 1e6,
        },
        "per_node": [
            {
                "node": node,
                "units": int(s["units"]),
                "units_per_s": s["units"] / max(s["last"] - s["first"], 1e-9),
                "active_s": s["last"] - s["first"],
            }
            for node, s in sorted(per_node.items())
        ],
        "spread": {
            "max_over_min": max(counts) / min(counts) if min(counts) else None,
            "stdev_over_mean": statistics.pstdev(counts) / statistics.mean(counts),
        },
    }


def held_by(task: dtaskq.Task, node: str) -> list[str]:
    """Units of ``task`` that ``node`` holds."""
    return [
        u.id
        for u in task.units.values()
        if u.node == node and u.status is dtaskq.UnitStatus.IN_PROGRESS
    ]


def wait_held(
    client: dtaskq.Client, ref: dtaskq.TaskRef, node: str, done: float, added: float
) -> None:
    """Waits until ``done`` units of ``ref`` are complete and ``node`` holds some."""
    while True:
        task = client.get_task(ref.namespace, ref.task_id)
        assert task is not None and task.status is dtaskq.TaskStatus.STARTED, task
        if task.counts.get(dtaskq.UnitStatus.COMPLETED, 0) >= done and held_by(task, node):
            return
        if time.monotonic() - added > DEADLINE_S:
            raise RuntimeError(f"{node} never held units")
        time.sleep(POLL_S / 4)


def kill_holding(
    client: dtaskq.Client,
    workers: WorkerProcesses,
    ref: dtaskq.TaskRef,
    victim: str,
    done: float,
) -> tuple[float, dtaskq.Task, int]:
    """SIGKILLs ``victim`` once ``done`` units are complete and it holds some, until it dies
    holding units; returns the time of the kill, the task just after it and the kills made."""
    started = time.monotonic()
    for kills in range(1, KILL_ATTEMPTS + 1):
        wait_held(client, ref, victim, done, started)
        killed_at = workers.kill(victim)
        after = client.get_task(ref.namespace, ref.task_id)
        assert after is not None
        if held_by(after, victim):
            return killed_at, after, kills
        # Its last reports reached the server after its death and completed its units.
        workers.restart(victim)
        workers.wait_started(30.0, [victim])
    raise RuntimeError(f"{victim} held no unit at any of {KILL_ATTEMPTS} kills")


def bench_kill(
    client: dtaskq.Client,
    r: redis.Redis,
    prefix: str,
    workers: WorkerProcesses,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """(b) A task of ``args.units`` units; the last worker is SIGKILLed mid-way while it holds
    units."""
    victim = list(workers.procs)[-1]
    added = time.monotonic()
    ref = add(client, "kill", args, args.units)
    killed_at, after, kills = kill_holding(client, workers, ref, victim, args.kill_at * args.units)
    held = held_by(after, victim)
    expires = {u: after.units[u].lease_expires_at for u in held}
    task = wait_finished(client, ref)
    finished = time.monotonic() - added
    assert task.status is dtaskq.TaskStatus.FINISHED, task
    assert task.counts[dtaskq.UnitStatus.COMPLETED] == args.units, task.counts
    retaken = notes(r, prefix, "retaken", ref.task_id)
    redone = notes(r, prefix, "redone", ref.task_id)
    missing = [u for u in held if u not in retaken or u not in redone]
    assert not missing, f"units of {victim} never run again: {missing}"
    return {
        "units": args.units,
        "victim": victim,
        "kill_at": args.kill_at,
        "lease_ms": args.lease_ms,
        "held": len(held),
        "kills": kills,
        "reclaim_s": min(retaken[u][2] for u in held) - killed_at,
        "lease_left_s": [(at.timestamp() - killed_at) if at else None for at in expires.values()],
        "waited_after_expiry_s": [
            retaken[u][2] - at.timestamp() for u, at in expires.items() if at is not None
        ],
        "all_done_s": max(redone[u][2] for u in held) - killed_at,
        "retaken_by": sorted({retaken[u][0] for u in held}),
        "task_wall_s": finished,
        "units_per_s": args.units / finished,
    }


def warm_up(client: dtaskq.Client, args: argparse.Namespace) -> dtaskq.TaskRef:
    """A first task, added before the workers start and waited for: the measured tasks then
    find the scripts loaded, the namespace registered and every worker past its start-up."""
    return add(client, "warm-up", args, WARM_UP_UNITS)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every measurement and returns the results as stored in the JSON file."""
    load = os.getloadavg()[0]
    began = time.perf_counter()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    with server(args.server) as (url, described):
        r = redis.Redis.from_url(url)
        client = dtaskq.Client.from_url(url, prefix=prefix)
        command = [sys.executable, "-m", "dtaskq", "worker"]
        path = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)
        env = {ENV_URL: url, "PYTHONPATH": path, "NOOP_KEYS": noop_keys(prefix)}
        try:
            print(f"server: {described['kind']} {described['version']} at {url}", flush=True)
            ref = warm_up(client, args)
            with WorkerProcesses(command, env) as workers:
                for node in node_ids(args.workers):
                    options = [
                        *("--prefix", prefix, "--namespace", NAMESPACE),
                        *("--provider", "noop_provider:factory"),
                        *("--node-id", node, "--concurrency", str(args.threads)),
                        *("--lease-ms", str(args.lease_ms), "--log-level", "INFO"),
                    ]
                    env = {
                        "NOOP_NODE": node,
                        "NOOP_THREADS": str(args.threads),
                        "NOOP_BATCH": str(args.batch),
                    }
                    workers.start(node, options, env)
                workers.wait_started(30.0)
                wait_finished(client, ref)
                results: dict[str, Any] = {}
                print(f"throughput: {args.units} units, {args.workers} workers ...", flush=True)
                results["throughput"] = bench_throughput(client, r, prefix, workers, args)
                print(f"kill -9: {args.units} units, {args.workers} workers ...", flush=True)
                results["kill"] = bench_kill(client, r, prefix, workers, args)
                workers.stop(STOP_TIMEOUT_S)
                results["exits"] = workers.exits
        finally:
            if described["kind"] == "external":
                delete_prefix(r, prefix)
            client.close()
            r.close()
    params = {
        "workers": args.workers,
        "threads": args.threads,
        "batch": args.batch,
        "units": args.units,
        "lease_ms": args.lease_ms,
        "kill_at": args.kill_at,
    }
    return run_report(described, load, params, results, began)


def table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (also readable as plain text)."""
    params = report["params"]
    thr = report["results"]["throughput"]
    kill = report["results"]["kill"]
    us = thr["per_unit_us"]
    setup = f"{params['workers']} workers x {params['threads']} threads"
    if params.get("batch", 1) > 1:
        setup += f", batches of {params['batch']}"
    rows = [("measure", "result", "server script", "server CPU", "workers' CPU")]
    rows.append(
        (
            f"{thr['units']:,} no-op units, {setup}: add -> FINISHED",
            f"{thr['units_per_s']:,.0f} units/s ({thr['wall_s']:.1f} s)",
            f"{us['script']:,.0f} µs/unit",
            f"{us['server_cpu']:,.0f} µs/unit",
            f"{us['workers_cpu']:,.0f} µs/unit",
        )
    )
    per_node = " / ".join(f"{n['units']:,} ({n['units_per_s']:,.0f}/s)" for n in thr["per_node"])
    spread = thr["spread"]
    ratio = "-" if spread["max_over_min"] is None else f"{spread['max_over_min']:.2f}"
    # A victim whose last reports complete its units after its death is restarted and killed
    # again.
    retried = f" (kill {kill['kills']})" if kill["kills"] > 1 else ""
    for measure, result in (
        ("  per node: units (units/s over its own first to last unit)", per_node),
        (
            "  spread of units per node: max/min; stdev/mean",
            f"{ratio}; {spread['stdev_over_mean']:.1%}",
        ),
        ("  add -> first unit begun", f"{thr['first_unit_after_s'] * 1e3:,.0f} ms"),
        (
            f"kill -9 of {kill['victim']} at {kill['kill_at']:.0%} done{retried}, holding "
            f"{kill['held']} unit(s) (lease {kill['lease_ms']:,} ms): kill -> first of them "
            "begun elsewhere",
            f"{kill['reclaim_s']:.2f} s",
        ),
        (
            "  their leases ran out (after the kill); each waited after that until it began",
            f"{_seconds(kill['lease_left_s'])}; {_seconds(kill['waited_after_expiry_s'])}",
        ),
        ("  kill -> all of them done", f"{kill['all_done_s']:.2f} s"),
        (
            "  that task: add -> FINISHED",
            f"{kill['units_per_s']:,.0f} units/s ({kill['task_wall_s']:.1f} s)",
        ),
    ):
        rows.append((measure, result, "", "", ""))
    return markdown(rows)


def _seconds(values: Sequence[float | None]) -> str:
    """Up to three values as they are; more as their range and median."""
    known = sorted(v for v in values if v is not None)
    missing = len(values) - len(known)
    if len(values) <= 3 or not known:
        return ", ".join("-" if v is None else f"{v:.2f} s" for v in values)
    text = f"{known[0]:.2f}-{known[-1]:.2f} s (median {statistics.median(known):.2f} s)"
    return text + (f", {missing} unknown" if missing else "")


def fraction(text: str) -> float:
    """An argparse type: a fraction in (0, 1)."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of the benchmark."""
    p = new_parser(__doc__, RESULTS)
    p.add_argument("--workers", type=positive, default=4, help="worker processes (default 4)")
    p.add_argument(
        "--threads", type=positive, default=4, help="unit threads per worker (default 4)"
    )
    p.add_argument("--units", type=positive, default=20_000, help="units per task (default 20000)")
    p.add_argument(
        "--batch", type=positive, default=1, help="range units claimed per call (default 1)"
    )
    p.add_argument(
        "--lease-ms", type=positive, default=2_000, help="lease of the tasks (default 2000)"
    )
    p.add_argument(
        "--kill-at", type=fraction, default=0.3, help="share done at the kill (default 0.3)"
    )
    args = parse(p, argv)
    if args.workers < 2:
        p.error("--workers must be at least 2: one is killed")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark, prints the table and saves the JSON; returns the exit code."""
    args = parse_args(argv)
    report = run(args)
    return publish(report, table(report), args.out)


if __name__ == "__main__":
    sys.exit(main())
