"""The tables ``bench/jobs.py`` prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core import (
    markdown,
)
from job_measures import STEADY_BATCH


def _us(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f} µs"


def _ms(stats: dict[str, float], keys: Sequence[str] = ("p50", "p95", "p99", "max")) -> str:
    return ", ".join(f"{k} {stats[k] * 1e3:,.1f}" for k in keys) + " ms"


def _cost_row(measure: str, result: str, m: dict[str, Any]) -> tuple[str, ...]:
    calls = m.get("script_calls_per_job", m.get("commands_per_job"))
    return (
        measure,
        result,
        "" if calls is None else f"{calls:.2f}",
        _us(m.get("redis_cpu_us")),
        _us(m.get("redis_script_us")),
        _us(m.get("client_cpu_us")),
    )


def _row(measure: str, result: str) -> tuple[str, ...]:
    return (measure, result, "", "", "", "")


def table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (also readable as plain text)."""
    res = report["results"]
    handler = report["params"]["handler"]
    header = ("measure", "result", "calls/job", "Redis CPU/job", "script/job", "client CPU/job")
    rows: list[tuple[str, ...]] = [header]
    if "enqueue" in res:
        single, many, mem = (res["enqueue"][k] for k in ("single", "many", "memory"))
        rows.append(
            _cost_row(
                f"enqueue, one call per job ({single['jobs']:,} jobs; client: the producer)",
                f"{single['jobs_per_s']:,.0f} jobs/s",
                single,
            )
        )
        rows.append(
            _cost_row(
                f"enqueue_many ({many['jobs']:,} jobs; client: the producer)",
                f"{many['jobs_per_s']:,.0f} jobs/s",
                many,
            )
        )
        measure = f"Redis memory per pending job ({mem['jobs']:,} jobs): used_memory delta"
        result = f"{mem['per_job_used_memory']:,.0f} B"
        if mem["job_hash_bytes"]:
            measure += "; MEMORY USAGE of one job's hash"
            result += f"; {mem['job_hash_bytes']:,} B"
        rows.append(_row(measure, result))
    for config in res.get("configs", []):
        setup = f"{config['workers']} worker(s) x concurrency {config['concurrency']}"
        if "burn" in config:
            b = config["burn"]
            rows.append(
                _cost_row(
                    f"burn-down, {b['jobs']:,} {handler} no-op jobs, {setup}: first job begun "
                    "-> all COMPLETED (client: the workers)",
                    f"{b['jobs_per_s']:,.0f} jobs/s ({b['drain_s']:.2f} s)",
                    b,
                )
            )
            rows.append(
                _row(
                    "  workers launched -> all COMPLETED (-> first job begun); jobs per worker",
                    f"{b['launch_to_done_s']:.2f} s ({b['launch_to_first_job_s']:.2f} s); "
                    + " / ".join(f"{n:,}" for n in b["per_node"].values()),
                )
            )
        if "steady" in config:
            s = config["steady"]
            rows.append(
                _cost_row(
                    f"steady, {setup}, producer of enqueue_many x {STEADY_BATCH} for "
                    f"{s['duration_s']:.1f} s (client: the workers)",
                    f"{s['jobs_per_s']:,.0f} jobs/s ({s['completed']:,} completed; backlog "
                    f"full {s['producer_waits']:,}x)",
                    s,
                )
            )
        if "latency" in config:
            lat = config["latency"]
            rows.append(
                _row(
                    f"enqueue -> handler start, {lat['count']} sequential jobs, {setup}",
                    _ms(lat),
                )
            )
        if "delayed" in config:
            d = config["delayed"]
            rows.append(
                _row(
                    f"delay={d['delay_s']:g} s: due -> handler start ({d['handler']['count']} "
                    f"jobs), {setup}; due -> claim",
                    f"{_ms(d['handler'], ('p50', 'max'))}; {_ms(d['claim'], ('p50', 'max'))}",
                )
            )
    text = markdown(rows)
    if "peer" in res:
        text += "\n\n" + peer_table(res["peer"])
    return text


def peer_table(peer: dict[str, Any]) -> str:
    """The huey peer's figures, as a table of their own."""
    rows: list[tuple[str, ...]] = [
        ("huey (peer)", "result", "commands/job", "Redis CPU/job", "script/job", "client CPU/job")
    ]
    single, mem = peer["enqueue"], peer["memory"]
    rows.append(
        _cost_row(
            f"enqueue, one call per task ({single['jobs']:,} tasks; no batch API; client: the "
            "producer)",
            f"{single['jobs_per_s']:,.0f} jobs/s",
            single,
        )
    )
    rows.append(
        _row(
            f"Redis memory per pending task ({mem['jobs']:,} tasks): used_memory delta",
            f"{mem['per_job_used_memory']:,.0f} B",
        )
    )
    for b in peer["burn"]:
        rows.append(
            _cost_row(
                f"burn-down, {b['jobs']:,} no-op tasks, 1 consumer x {b['threads']} threads: "
                "first task begun -> all done (client: the consumer)",
                f"{b['jobs_per_s']:,.0f} jobs/s ({b['drain_s']:.2f} s)",
                b,
            )
        )
        rows.append(
            _row(
                "  consumer launched -> all done (-> first task begun)",
                f"{b['launch_to_done_s']:.2f} s ({b['launch_to_first_job_s']:.2f} s)",
            )
        )
    lat = peer["latency"]
    rows.append(
        _row(
            f"enqueue -> task start, {lat['count']} sequential tasks, 1 consumer x "
            f"{peer['latency_threads']} threads",
            _ms(lat),
        )
    )
    if "delayed" in peer:
        d = peer["delayed"]
        rows.append(
            _row(
                f"delay={d['delay_s']:g} s: due (eta) -> task start ({d['handler']['count']} "
                "tasks)",
                _ms(d["handler"], ("p50", "max")),
            )
        )
    head = f"huey {peer['huey']} (RedisHuey, store_none=True; huey_consumer -k thread -q)"
    return head + "\n" + markdown(rows)


# -- the command line ---------------------------------------------------------------------------
