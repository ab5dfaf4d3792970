"""Benchmark of dtaskq's range tasks (span splitting) on a real server.

Measures, against an embedded server (or ``$DTASKQ_REDIS_URL`` under a key prefix of its
own, deleted afterwards):

(a) ``claim_first``/``claim_next`` from one process: claims alone, and claim + complete;
(b) ``claim(max_units=100)``: units claimed per second alone, and with a complete per unit;
(c) several spawned processes claiming with ``claim_next`` and completing, on one task;
(d) time and server memory to add a 10 000 000-unit task (workers_hint 8 and 64);
(e) server memory after 1 000 000 units of a 1 000 000-unit task completed, with its
    breakdown (completion bitmaps, spans left);

with the server CPU, server script time and client CPU behind each figure (``Meter`` of
``core.py``). Prints a table and stores the figures in ``bench/results/spans.json`` under the
server kind, so a run with ``--server redis`` and one with ``--server valkey`` sit side by side.

Run from the repository root: ``python bench/spans.py [--server redis|valkey]``.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import sys
import threading
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
    bench_ping,
    delete_prefix,
    markdown,
    median_sample,
    new_parser,
    parse,
    positive,
    publish,
    run_report,
    server,
)

import dtaskq
from dtaskq import ops
from dtaskq.keys import Partition, partition_of

RESULTS = Path(__file__).resolve().parent / "results" / "spans.json"
NAMESPACE = "bench"
"""Namespaces are ``bench-<measure>``: each measure has a lease index of its own, so the units
that the claims-only measures leave in flight weigh on no other."""
NODE = "bench-node"
LEASE_MS = 3_600_000
"""The lease of every bench task: none expires during a run, so no claim script pays for
ending expired leases (each range claim ends up to 8 of its partition first)."""
HINT = 4
"""``workers_hint`` of the claim tasks (a, b, c) and of the completed task (e)."""
BATCH = 100
"""``max_units`` of the batched claims (b)."""
BIG_UNITS = 10_000_000
BIG_HINTS = (8, 64)
COMPLETE_BATCH = 1_000
"""(e) claims this many units per call and completes them in one pipeline."""
TASK_KEYS = {
    "task": 0,
    "units": 1,
    "acks": 2,
    "nodes": 3,
    "spans": 9,
    "order": 10,
    "returned": 11,
    "kept": 12,
    "done": 13,
}
"""The keys of one task, by their index in ``Partition.task_keys``."""


def add_range_task(
    client: dtaskq.Client, measure: str, task_id: str, units: int, hint: int
) -> dtaskq.TaskRef:
    """A range task of ``units`` units whose leases outlast the run, in the namespace of
    ``measure``."""
    return client.add_task(
        f"{NAMESPACE}-{measure}", task_id, unit_count=units, workers_hint=hint, lease_ms=LEASE_MS
    )


def claim_units(
    client: dtaskq.Client,
    ref: dtaskq.TaskRef,
    node: str,
    count: int | None,
    batch: int,
    complete: bool,
) -> tuple[int, int]:
    """Claims ``count`` units of ``ref`` for ``node`` (all it can get when None): with
    ``claim_first`` then ``claim_next`` when ``batch`` is 1, else with
    ``claim(max_units=batch)``; with ``complete``, completes each unit after its claim.
    Returns ``(units, script calls)``."""
    last: int | None = None
    got = calls = 0
    while count is None or got < count:
        if batch == 1:
            one = (
                client.claim_first(ref, node)
                if last is None
                else client.claim_next(ref, node, last)
            )
            claimed = one if isinstance(one, dtaskq.Done) else [one]
        else:
            wanted = batch if count is None else min(batch, count - got)
            claimed = client.claim(ref, node, max_units=wanted, last=last)
        calls += 1
        if isinstance(claimed, dtaskq.Done):
            break
        if complete:
            for unit in claimed:
                client.complete_unit(ref, node, unit, unit.token)
            calls += len(claimed)
        got += len(claimed)
        last = claimed[-1]
    return got, calls


def per_unit(sample: Sample, units: int, calls: int) -> dict[str, Any]:
    """Throughput and per-unit costs in microseconds, plus script time per script call."""
    return {
        "units": units,
        "calls": calls,
        "units_per_s": units / sample.wall_s,
        "wall_us": sample.wall_s / units * 1e6,
        "server_cpu_us": sample.server_cpu_s / units * 1e6,
        "script_us": sample.script_s / units * 1e6,
        "client_cpu_us": sample.client_cpu_s / units * 1e6,
        "script_us_per_call": sample.script_s / calls * 1e6,
    }


def bench_claims(
    client: dtaskq.Client, r: redis.Redis, units: int, batch: int, complete: bool, rounds: int
) -> dict[str, Any]:
    """(a, b) One process claims every unit of a fresh ``units``-unit task, ``batch`` per
    call, completing each or not: the median of ``rounds`` tasks."""
    samples = []
    calls = 0
    measure = f"{'cycles' if complete else 'claims'}-{batch}"
    for round_ in range(rounds):
        ref = add_range_task(client, measure, str(round_), units, HINT)
        with Meter(r) as meter:
            got, calls = claim_units(client, ref, NODE, units, batch, complete)
        samples.append(meter.result())
        assert got == units, f"claimed {got} of {units} units"
    return {
        "batch": batch,
        "complete": complete,
        "rounds": rounds,
        **per_unit(median_sample(samples), units, calls),
    }


def process_claimer(
    url: str,
    prefix: str,
    ref: dtaskq.TaskRef,
    node: str,
    start: Any,
    out: Any,
) -> None:
    """(c) One spawned process: connects, waits for the others at ``start``, then claims
    with ``claim_first``/``claim_next`` and completes each unit until none is left. Puts
    ``(node, units, calls, start, end, cpu)`` on ``out``, or ``(node, error)``."""
    try:
        with dtaskq.Client.from_url(url, prefix=prefix) as client:
            client.get_task(ref.namespace, ref.task_id)  # connects, learns the partition
            start.wait()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            units, calls = claim_units(client, ref, node, None, 1, True)
            wall1, cpu1 = time.perf_counter(), time.process_time()
        out.put((node, units, calls, wall0, wall1, cpu1 - cpu0))
    except BaseException as exc:
        start.abort()  # the others, and the parent, stop waiting for this one
        out.put((node, f"{type(exc).__name__}: {exc}"))
        raise


def run_processes(
    client: dtaskq.Client,
    url: str,
    prefix: str,
    r: redis.Redis,
    ref: dtaskq.TaskRef,
    processes: int,
) -> dict[str, Any]:
    """One round of (c) on ``ref``: every process starts at once; the round lasts from the
    first start to the last end."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(processes + 1)
    out = ctx.Queue()
    children = [
        ctx.Process(target=process_claimer, args=(url, prefix, ref, f"{NODE}-{i}", start, out))
        for i in range(processes)
    ]
    for child in children:
        child.start()
    try:
        with Meter(r) as meter:
            with contextlib.suppress(threading.BrokenBarrierError):  # a child failed: see below
                start.wait(timeout=120)
            reports = [out.get(timeout=600) for _ in children]
    finally:
        for child in children:
            child.join(timeout=60)
    errors = [report for report in reports if len(report) == 2]
    if errors:
        raise RuntimeError(f"claimer processes failed: {errors}")
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.status == dtaskq.TaskStatus.FINISHED, task
    sample = meter.result()
    wall = max(rep[4] for rep in reports) - min(rep[3] for rep in reports)
    units = sum(rep[1] for rep in reports)
    calls = sum(rep[2] for rep in reports)
    # The parent's own wall and CPU are mostly waiting: the children's figures replace them.
    sample = Sample(wall, sum(rep[5] for rep in reports), sample.server_cpu_s, sample.script_s)
    return {
        **per_unit(sample, units, calls),
        "per_process": [
            {
                "node": node,
                "units": got,
                "units_per_s": got / (end - begin),
                "client_cpu_us": cpu / max(got, 1) * 1e6,
            }
            for node, got, _, begin, end, cpu in sorted(reports)
        ],
    }


def bench_processes(
    client: dtaskq.Client,
    url: str,
    prefix: str,
    r: redis.Redis,
    units: int,
    processes: int,
    rounds: int,
) -> dict[str, Any]:
    """(c) ``processes`` spawned processes share one fresh ``units``-unit task of
    ``workers_hint`` equal to their number; the round of median throughput of ``rounds``."""
    results = []
    for round_ in range(rounds):
        ref = add_range_task(client, "processes", str(round_), units, processes)
        results.append(run_processes(client, url, prefix, r, ref, processes))
    results.sort(key=lambda result: result["units_per_s"])
    return {
        "processes": processes,
        "rounds": rounds,
        "all_units_per_s": [result["units_per_s"] for result in results],
        **results[len(results) // 2],
    }


def used_memory(r: redis.Redis) -> int:
    """INFO ``used_memory``."""
    return int(r.info("memory")["used_memory"])


def task_keys(r: redis.Redis, prefix: str, ref: dtaskq.TaskRef) -> dict[str, str]:
    """The names of the keys of a range task by kind (``TASK_KEYS``), then its completion
    bitmaps as ``done<k>``."""
    task_id = ref.task_id
    keys = Partition(prefix, ref.namespace, partition_of(task_id, 1)).task_keys(task_id)
    named = {name: keys[index] for name, index in TASK_KEYS.items()}
    base = named["done"][: -len(task_id) - 1]
    for k in sorted(int(k) for k in r.smembers(named["done"])):
        named[f"done{k}"] = f"{base}{k}:{task_id}"
    return named


def task_memory(r: redis.Redis, prefix: str, ref: dtaskq.TaskRef) -> dict[str, int]:
    """``MEMORY USAGE`` (exact) of each key of a range task that exists, the completion
    bitmaps summed under ``bitmaps``; ``bitmap_bytes`` is their total STRLEN, ``span_count``
    and ``record_count`` the number of spans left and of unit records."""
    keys = task_keys(r, prefix, ref)
    sizes = {name: int(r.memory_usage(key, samples=0) or 0) for name, key in keys.items()}
    bitmaps = [name for name in keys if name not in TASK_KEYS]
    return {
        "total": sum(sizes.values()),
        **{name: size for name, size in sizes.items() if size and name in TASK_KEYS},
        "bitmaps": sum(sizes[name] for name in bitmaps),
        "bitmap_count": len(bitmaps),
        "bitmap_bytes": sum(int(r.strlen(keys[name])) for name in bitmaps),
        "span_count": int(r.zcard(keys["spans"])),
        "record_count": int(r.hlen(keys["units"])),
    }


def bench_big_add(
    client: dtaskq.Client, r: redis.Redis, prefix: str, hint: int, runs: int
) -> dict[str, Any]:
    """(d) ``add_task`` of a ``BIG_UNITS``-unit task with ``workers_hint=hint``, ``runs``
    times: the median of each measure, and the memory it takes."""
    samples = []
    deltas = []
    refs = []
    for run in range(runs):
        before = used_memory(r)
        with Meter(r) as meter:
            refs.append(add_range_task(client, "big", f"{hint}-{run}", BIG_UNITS, hint))
        deltas.append(used_memory(r) - before)
        samples.append(meter.result())
    return {
        "units": BIG_UNITS,
        "workers_hint": hint,
        "runs": runs,
        "median": asdict(median_sample(samples)),
        "used_memory_delta": statistics.median(deltas),
        "keys": task_memory(r, prefix, refs[-1]),
    }


def complete_pipelined(
    client: dtaskq.Client, ref: dtaskq.TaskRef, node: str, units: Sequence[dtaskq.ClaimedUnit]
) -> None:
    """Completes ``units`` with the very script calls ``client.complete_unit`` makes, one per
    unit, but sent in one pipeline instead of one round trip each (the client has no batch
    completion). Needs the namespace's partition count already known to the client."""
    router = client._core.router
    steps = [ops.complete_unit(router, ref, node, unit, unit.token) for unit in units]
    pipe = client.redis.pipeline(transaction=False)
    for step in steps:
        call = next(step)
        pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    for step, reply in zip(steps, pipe.execute(), strict=True):
        try:
            step.send(reply)
        except StopIteration:
            continue
        raise RuntimeError("complete_unit wanted a second script call")


def bench_completed(
    client: dtaskq.Client, r: redis.Redis, prefix: str, units: int
) -> dict[str, Any]:
    """(e) Claims every unit of a fresh ``units``-unit task ``COMPLETE_BATCH`` at a time and
    completes each (pipelined); the memory the task holds half-way and at the end."""
    before = used_memory(r)
    ref = add_range_task(client, "completed", str(units), units, HINT)
    added = used_memory(r) - before
    peak = added
    half: dict[str, Any] = {}
    last: int | None = None
    done = calls = 0
    with Meter(r) as meter:
        while True:
            claimed = client.claim(ref, NODE, max_units=COMPLETE_BATCH, last=last)
            calls += 1
            if isinstance(claimed, dtaskq.Done):
                break
            complete_pipelined(client, ref, NODE, claimed)
            calls += len(claimed)
            done += len(claimed)
            last = claimed[-1]
            delta = used_memory(r) - before
            peak = max(peak, delta)
            if not half and done >= units // 2:
                half = {"completed": done, "used_memory_delta": delta}
                half["keys"] = task_memory(r, prefix, ref)
    end = used_memory(r) - before
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.status == dtaskq.TaskStatus.FINISHED, task
    memory = task_memory(r, prefix, ref)
    # What the task itself holds, as used_memory sees it; the rest of the delta is server
    # state that no key holds (it stays when every key is deleted).
    ending = used_memory(r)
    r.delete(*task_keys(r, prefix, ref).values())
    freed = ending - used_memory(r)
    return {
        "units": units,
        "workers_hint": HINT,
        "claim_batch": COMPLETE_BATCH,
        "completion": per_unit(meter.result(), done, calls),
        "used_memory_delta_added": added,
        "used_memory_delta_peak": peak,
        "half": half,
        "end": {
            "completed": done,
            "status": task.status.value,
            "used_memory_delta": end,
            "per_completed_unit": end / done,
            "keys": memory,
            "freed_by_deleting_its_keys": freed,
        },
    }


def warm_up(client: dtaskq.Client) -> None:
    """Loads every script used and registers the namespace, so no measurement pays for it."""
    ref = add_range_task(client, "warm-up", "warm-up", 2 * COMPLETE_BATCH, HINT)
    client.get_task(ref.namespace, ref.task_id)
    claim_units(client, ref, NODE, 200, 1, True)
    claim_units(client, ref, NODE, 200, BATCH, True)
    claimed = client.claim(ref, NODE, max_units=COMPLETE_BATCH)
    assert not isinstance(claimed, dtaskq.Done)
    complete_pipelined(client, ref, NODE, claimed)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every measurement and returns the results as stored in the JSON file."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    load = os.getloadavg()[0]
    began = time.perf_counter()
    with server(args.server) as (url, described):
        r = redis.Redis.from_url(url)
        client = dtaskq.Client.from_url(url, prefix=prefix)
        try:
            print(f"server: {described['kind']} {described['version']} at {url}", flush=True)
            warm_up(client)
            results: dict[str, Any] = {"claims": []}
            for batch, complete, count in (
                (1, False, args.claims),
                (1, True, args.claims),
                (BATCH, False, args.batch_claims),
                (BATCH, True, args.claims),
            ):
                call = "claim_next" if batch == 1 else f"claim(max_units={batch})"
                label = "claim + complete" if complete else "claims"
                print(f"{call}: {count} units, {label} x {args.rounds} ...", flush=True)
                results["claims"].append(
                    bench_claims(client, r, count, batch, complete, args.rounds)
                )
            print(
                f"{args.processes} processes: {args.process_units} units x {args.rounds} ...",
                flush=True,
            )
            results["processes"] = bench_processes(
                client, url, prefix, r, args.process_units, args.processes, args.rounds
            )
            results["big_add"] = []
            for hint in BIG_HINTS:
                print(f"add_task {BIG_UNITS} units, workers_hint {hint} ...", flush=True)
                results["big_add"].append(bench_big_add(client, r, prefix, hint, args.repeat))
            print(f"complete {args.completed} units ...", flush=True)
            results["completed"] = bench_completed(client, r, prefix, args.completed)
            results["ping"] = bench_ping(r, args.claims, args.rounds)
        finally:
            if described["kind"] == "external":
                delete_prefix(r, prefix)
            client.close()
            r.close()
    params = {
        "claims": args.claims,
        "batch_claims": args.batch_claims,
        "processes": args.processes,
        "process_units": args.process_units,
        "repeat": args.repeat,
        "completed": args.completed,
        "rounds": args.rounds,
    }
    return run_report(described, load, params, results, began)


def table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (also readable as plain text)."""
    res = report["results"]
    rows = [("measure", "result", "server script", "server CPU", "client CPU")]

    def costs(c: dict[str, Any], per: str) -> tuple[str, str, str]:
        return (
            f"{c['script_us']:,.0f} µs/{per}",
            f"{c['server_cpu_us']:,.0f} µs/{per}",
            f"{c['client_cpu_us']:,.0f} µs/{per}",
        )

    for c in res["claims"]:
        call = "claim_next" if c["batch"] == 1 else f"claim(max_units={c['batch']})"
        what = "+ complete_unit per unit" if c["complete"] else "claims only"
        batched = c["batch"] > 1 and not c["complete"]
        per_call = f"; {c['script_us_per_call']:,.0f} µs/call" if batched else ""
        rows.append(
            (
                f"{call}, {what} ({c['units']:,} units, median of {c['rounds']})",
                f"{c['units_per_s']:,.0f} units/s",
                f"{c['script_us']:,.0f} µs/unit{per_call}",
                *costs(c, "unit")[1:],
            )
        )
    p = res["processes"]
    rows.append(
        (
            f"claim_next + complete_unit, {p['processes']} processes, one task "
            f"({p['units']:,} units, median of {p['rounds']})",
            f"{p['units_per_s']:,.0f} units/s",
            *costs(p, "unit"),
        )
    )
    rows.append(
        (
            "  the same, per process",
            " / ".join(f"{q['units_per_s']:,.0f}" for q in p["per_process"]) + " units/s",
            "",
            "",
            "",
        )
    )
    for big in res["big_add"]:
        m = big["median"]
        rows.append(
            (
                f"add_task, {big['units']:,} units, workers_hint {big['workers_hint']} "
                f"(median of {big['runs']})",
                f"{m['wall_s'] * 1e3:,.1f} ms",
                f"{m['script_s'] * 1e3:,.2f} ms",
                f"{m['server_cpu_s'] * 1e3:,.1f} ms",
                f"{m['client_cpu_s'] * 1e3:,.1f} ms",
            )
        )
    for big in res["big_add"]:
        rows.append(
            (
                f"memory of that task, workers_hint {big['workers_hint']}: used_memory delta "
                f"(MEMORY USAGE of its keys)",
                f"{big['used_memory_delta']:,.0f} B ({big['keys']['total']:,} B)",
                "",
                "",
                "",
            )
        )
    done = res["completed"]
    comp = done["completion"]
    rows.append(
        (
            f"complete_unit, pipelined {done['claim_batch']:,} per round trip "
            f"({comp['units']:,} units)",
            f"{comp['units_per_s']:,.0f} units/s",
            *costs(comp, "unit"),
        )
    )
    for label, state in (("half-way", done["half"]), ("at the end", done["end"])):
        k = state["keys"]
        rows.append(
            (
                f"memory, {done['units']:,}-unit task, {state['completed']:,} completed "
                f"({label}): used_memory delta; per completed unit",
                f"{state['used_memory_delta']:,} B; "
                f"{state['used_memory_delta'] / state['completed']:.3f} B",
                "",
                "",
                "",
            )
        )
        rows.append(
            (
                f"  its keys ({label}): MEMORY USAGE; bitmaps (STRLEN); spans left; records",
                f"{k['total']:,} B; {k['bitmap_count']} ({k['bitmap_bytes']:,} B); "
                f"{k['span_count']}; {k['record_count']}",
                "",
                "",
                "",
            )
        )
    freed = done["end"]["freed_by_deleting_its_keys"]
    rows.append(
        (
            "  used_memory freed by deleting the task's keys at the end; per completed unit",
            f"{freed:,} B; {freed / done['end']['completed']:.3f} B",
            "",
            "",
            "",
        )
    )
    rows.append(
        (
            "  peak used_memory delta while completing",
            f"{done['used_memory_delta_peak']:,} B",
            "",
            "",
            "",
        )
    )
    ping = res["ping"]
    rows.append(
        (
            f"PING round trips, sync (baseline, median of {ping['rounds']})",
            f"{ping['per_s']:,.0f} /s",
            "",
            "",
            "",
        )
    )
    return markdown(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of the benchmark."""
    p = new_parser(__doc__, RESULTS)
    p.add_argument(
        "--claims",
        type=positive,
        default=5_000,
        help="units per claim_next test and per claim + complete test (default 5000)",
    )
    p.add_argument(
        "--batch-claims",
        type=positive,
        default=100_000,
        help=f"units per claim(max_units={BATCH}) test without completes (default 100000)",
    )
    p.add_argument("--processes", type=positive, default=4, help="claimer processes (default 4)")
    p.add_argument(
        "--process-units",
        type=positive,
        default=10_000,
        help="units of the task the processes share (default 10000)",
    )
    p.add_argument(
        "--repeat", type=positive, default=3, help=f"adds of each {BIG_UNITS}-unit task (default 3)"
    )
    p.add_argument(
        "--completed",
        type=positive,
        default=1_000_000,
        help="units of the task completed for the memory test (default 1000000)",
    )
    p.add_argument(
        "--rounds", type=positive, default=3, help="runs of each claim test; median (default 3)"
    )
    return parse(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark, prints the table and saves the JSON; returns the exit code."""
    args = parse_args(argv)
    report = run(args)
    return publish(report, table(report), args.out)


if __name__ == "__main__":
    sys.exit(main())
