"""Per-call costs of dtaskq's hot operations against a bare redis-py ``PING``.

For each operation, a loop of sequential calls from one sync client, measuring the client's
CPU per call (``time.process_time``, which includes the kernel's share of the socket work, as
PING's does) and the server's time per call (INFO commandstats of the commands the loop sent).
Operations: ``PING``; an empty dtaskq call (the library's ``ping`` function, or, for a dtaskq
that still splices its helpers into every script, an EVALSHA of those helpers and ``return 1``);
``claim_next`` and ``complete_unit`` on a range task; ``complete_and_claim`` with batches of 1
and 20; ``claim_any`` with completions on a named task. Operations the installed dtaskq lacks
are left out, so the same command measures an older checkout too
(``PYTHONPATH=<checkout> python bench/calls.py``).

Run from the repository root: ``python bench/calls.py [--server redis|valkey] [--calls N]``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from core import delete_prefix, new_parser, parse, positive, publish, run_report, server

import dtaskq

NAMESPACE = "calls"
NODE = "calls-node"
_SENT = ("ping", "fcall", "fcall_ro", "evalsha", "eval")
RESULTS = Path(__file__).resolve().parent / "results" / "calls.json"


def _commandstats(r: redis.Redis) -> dict[str, tuple[int, int]]:
    stats = r.info("commandstats")
    return {name[8:]: (int(v["calls"]), int(v["usec"])) for name, v in stats.items()}


def measure(r: redis.Redis, calls: int, step: Callable[[int], object]) -> dict[str, float]:
    """Client CPU and server time per call of ``step(i)`` for ``i`` in ``range(calls)``."""
    before = _commandstats(r)
    cpu = time.process_time()
    for i in range(calls):
        step(i)
    cpu = time.process_time() - cpu
    after = _commandstats(r)
    # Commands a function runs show up in the stats too, and within its own time: count only
    # what the client sent.
    sent = {
        name: (
            after[name][0] - before.get(name, (0, 0))[0],
            after[name][1] - before.get(name, (0, 0))[1],
        )
        for name in after
        if name in _SENT
    }
    server_calls = sum(n for n, _ in sent.values())
    return {
        "client_cpu_us": cpu / calls * 1e6,
        "server_us": sum(us for _, us in sent.values()) / calls,
        "round_trips_per_call": server_calls / calls,
    }


def _empty_call(client: dtaskq.Client, r: redis.Redis) -> Callable[[int], object]:
    """The cheapest call this dtaskq can make through its own path."""
    if hasattr(client, "ping"):
        return lambda _: client.ping()
    # An older dtaskq: every script carries its helpers; time a script that only has those.
    from dtaskq import scripts

    include = scripts.lua_dir() / "include"  # type: ignore[attr-defined]
    source = scripts._splice("-- @include common\nreturn 1", include)  # type: ignore[attr-defined]
    sha = r.script_load(source)
    return lambda _: r.evalsha(sha, 0)


def _completing(
    client: dtaskq.Client, ref: dtaskq.TaskRef, held: list[dtaskq.ClaimedUnit], batch: int
) -> Callable[[int], None]:
    """A step that completes the units held and claims as many more, in one call."""
    holding = [held]

    def step(_: int) -> None:
        done = [(u, u.token) for u in holding[0]]
        result = client.complete_and_claim(ref, NODE, done, batch, int(holding[0][-1]))
        assert not result.rejected and len(result.units) == batch
        holding[0] = result.units  # type: ignore[assignment]

    return step


def run(client: dtaskq.Client, r: redis.Redis, calls: int) -> dict[str, Any]:
    """Every measure, ``calls`` calls each."""
    results: dict[str, Any] = {}
    results["PING"] = measure(r, calls, lambda _: r.ping())
    empty = _empty_call(client, r)
    empty(0)
    results["empty call"] = measure(r, calls, empty)

    ref = client.add_task(NAMESPACE, "claims", unit_count=10 * calls, workers_hint=1)
    claimed: list[dtaskq.ClaimedUnit] = []
    last: list[int | None] = [None]

    def claim(_: int) -> None:
        unit = (
            client.claim_next(ref, NODE, last[0])
            if last[0] is not None
            else client.claim_first(ref, NODE)
        )
        assert isinstance(unit, dtaskq.ClaimedUnit)
        claimed.append(unit)
        last[0] = int(unit)

    results["claim_next"] = measure(r, calls, claim)
    results["complete_unit"] = measure(
        r, calls, lambda i: client.complete_unit(ref, NODE, claimed[i], claimed[i].token)
    )
    if hasattr(client, "complete_and_claim"):
        for batch in (1, 20):
            held = client.claim(ref, NODE, max_units=batch, last=last[0])
            assert isinstance(held, list)
            m = measure(r, max(1, calls // batch), _completing(client, ref, held, batch))
            results[f"complete_and_claim x{batch}"] = {**m, "units_per_call": batch}
    if hasattr(client, "claim_any"):
        named = client.add_task(NAMESPACE, "named", units=[f"u{i}" for i in range(calls + 1)])
        first = client.claim_any(named, NODE)
        holding_named = [first.units]

        def claim_any(_: int) -> None:
            done = [(u, u.token) for u in holding_named[0]]
            result = client.claim_any(named, NODE, complete=done)
            holding_named[0] = result.units  # type: ignore[assignment]

        results["claim_any + complete"] = measure(r, calls, claim_any)
    ping = results["PING"]["client_cpu_us"]
    for m in results.values():
        m["client_vs_ping"] = m["client_cpu_us"] / ping
    return results


def table(results: dict[str, Any]) -> str:
    """The figures as a text table."""
    rows = [("operation", "client CPU/call", "vs PING", "server µs/call", "round trips/call")]
    for name, m in results.items():
        rows.append(
            (
                name,
                f"{m['client_cpu_us']:.1f} µs",
                f"{m['client_vs_ping']:.2f}",
                f"{m['server_us']:.1f}",
                f"{m['round_trips_per_call']:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
    )


def main() -> int:
    """Measures, prints the table and saves the JSON; returns the exit code."""
    p = new_parser(__doc__, RESULTS)
    p.add_argument("--calls", type=positive, default=20_000, help="calls per measure (20000)")
    args = parse(p, None)
    load = os.getloadavg()[0]
    began = time.perf_counter()
    with server(args.server) as (url, described):
        prefix = f"bench-calls-{time.time_ns()}"
        with dtaskq.Client.from_url(url, prefix=prefix) as client, redis.Redis.from_url(url) as r:
            results = run(client, r, args.calls)
            delete_prefix(r, prefix)
    report = run_report(described, load, {"calls": args.calls}, results, began)
    return publish(report, table(results), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
