"""The huey side of ``bench/jobs.py --peer huey``: the same measures of huey's ``RedisHuey``.

Runs in an interpreter that has huey and redis-py (not dtaskq): ``bench/jobs.py`` starts it
with ``--peer-python``, with ``$HUEY_PEER_URL`` naming its own server, and reads the last line
it prints, a JSON report. The tasks, ``noop`` and ``stamp``, are those of ``bench/huey_tasks.py``.

Huey is configured as documented, with one change: ``store_none=True``, so every task stores
its result (as every dtaskq job keeps its record and result); the drain is over when the
results hash holds one result per task and the queue is empty. The consumer runs with
``-k thread -w <concurrency> -q`` (threads; ``-q`` logs warnings only, where the default
logs two lines per task) and its default scheduler interval of 1 s, which is what a delayed
task waits for.

Measures: single enqueues (huey has no batch enqueue: ``task.map`` enqueues one by one), Redis
memory per pending task, burn-down of ``--jobs`` tasks by one consumer per ``--concurrency``
value, enqueue -> task start latency of sequential tasks and delayed-task lateness.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from huey_tasks import NAME, URL_ENV, huey, noop, stamp
from stats import percentiles

BENCH = Path(__file__).resolve().parent
POLL_S = 0.01
SCHEDULER_INTERVAL_S = 1.0
"""huey_consumer's default ``--scheduler-interval``: when it moves due tasks to the queue."""
DEADLINE_S = 600.0


NOT_COUNTED = ("info", "hlen", "llen")
"""Commands of the benchmark itself (its server readings and drain checks), left out of the
commands per task."""


def server_cpu(r: redis.Redis) -> tuple[float, float, int]:
    """Redis CPU seconds (user + sys), seconds inside scripts and commands run so far, less
    those of :data:`NOT_COUNTED`."""
    cpu = r.info("cpu")
    stats = r.info("commandstats")
    script = sum(
        stats.get(f"cmdstat_{c}", {}).get("usec", 0)
        for c in ("evalsha", "eval", "fcall", "fcall_ro")
    )
    calls = sum(
        int(v["calls"]) for k, v in stats.items() if k.removeprefix("cmdstat_") not in NOT_COUNTED
    )
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), script / 1e6, calls


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def costs(
    jobs: int, before: tuple[float, float, int], after: tuple[float, float, int], client_cpu: float
) -> dict[str, float]:
    """Per task: Redis commands, CPU and script time (between the server readings ``before``
    and ``after``) and the client's CPU, in microseconds."""
    redis_cpu, script, calls = (b - a for a, b in zip(before, after, strict=True))
    return {
        "commands_per_job": calls / jobs,
        "redis_cpu_us": redis_cpu / jobs * 1e6,
        "redis_script_us": script / jobs * 1e6,
        "client_cpu_us": client_cpu / jobs * 1e6,
    }


def flush(r: redis.Redis) -> None:
    """Deletes the keys of this huey instance."""
    keys = list(r.scan_iter(match=f"huey.*.{NAME}*", count=1000))
    if keys:
        r.unlink(*keys)


def bench_enqueue(r: redis.Redis, jobs: int) -> dict[str, Any]:
    """``jobs`` single enqueues of ``noop``, timed; the tasks stay queued."""
    before = server_cpu(r)
    process0 = time.process_time()
    start = time.perf_counter()
    for _ in range(jobs):
        noop()
    wall = time.perf_counter() - start
    process = time.process_time() - process0
    return {
        "jobs": jobs,
        "jobs_per_s": jobs / wall,
        **costs(jobs, before, server_cpu(r), process),
    }


class Consumer:
    """One ``huey_consumer`` process of ``threads`` worker threads; its log goes to a
    temporary file."""

    def __init__(self, threads: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(BENCH)}
        command = [sys.executable, "-m", "huey.bin.huey_consumer", "huey_tasks.huey"]
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.launched = time.time()
        self.proc = subprocess.Popen(
            [*command, "-k", "thread", "-w", str(threads), "-q"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )

    def stop(self) -> int:
        """Stops the consumer (SIGINT, huey's graceful signal); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return int(self.proc.returncode)

    def logged(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def check(self, deadline: float) -> None:
        """Raises RuntimeError when the consumer exited or ``deadline`` (monotonic) passed."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"the huey consumer exited:\n{self.logged()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the huey consumer is late; its log:\n{self.logged()[-3000:]}")


def bench_burn(r: redis.Redis, jobs: int, threads: int) -> dict[str, Any]:
    """Enqueues ``jobs`` no-op tasks, starts one consumer and times the drain."""
    for _ in range(jobs):
        noop()
    results = huey.storage.result_key
    before = server_cpu(r)
    consumer = Consumer(threads)
    deadline = time.monotonic() + DEADLINE_S
    try:
        while True:
            pipe = r.pipeline(transaction=False)
            pipe.hlen(results)
            pipe.llen(huey.storage.queue_key)
            stored, queued = pipe.execute()
            if stored >= jobs and not queued:
                drained = time.time()
                break
            consumer.check(deadline)
            time.sleep(POLL_S)
        cpu_end = proc_cpu_s(consumer.proc.pid)
        after = server_cpu(r)
    finally:
        code = consumer.stop()
    firsts = []
    for value in r.hvals(results):
        found = huey.serializer.deserialize(value)
        if found is not None:
            firsts.append(found)
    assert len(firsts) == 1, firsts
    _, first, first_cpu = firsts[0]
    wall = drained - first
    flush(r)
    return {
        "jobs": jobs,
        "threads": threads,
        "drain_s": wall,
        "jobs_per_s": jobs / wall,
        "launch_to_done_s": drained - consumer.launched,
        "launch_to_first_job_s": first - consumer.launched,
        "exit": code,
        **costs(jobs, before, after, cpu_end - first_cpu),
    }


def result_of(handle: Any, consumer: Consumer, timeout: float = 30.0) -> Any:
    """A task's result, polled every millisecond (huey's own ``get(blocking=True)`` sleeps
    at least 0.1 s between reads; the figures come from the task's own stamps anyway)."""
    deadline = time.monotonic() + timeout
    while True:
        value = handle.get()
        if value is not None:
            return value
        consumer.check(deadline)
        time.sleep(0.001)


def bench_latency(r: redis.Redis, args: argparse.Namespace) -> dict[str, Any]:
    """Sequential tasks to an idle consumer: enqueue -> task start; then delayed tasks."""
    out: dict[str, Any] = {}
    consumer = Consumer(args.concurrency[0])
    try:
        result_of(stamp(), consumer)  # the consumer is up
        latencies = []
        for _ in range(args.latency_jobs):
            time.sleep(0.005)
            sent = time.time()
            latencies.append(result_of(stamp(), consumer) - sent)
        out["latency"] = percentiles(latencies)
        lateness = []
        for _ in range(args.delayed_jobs):
            # The scheduler looks every second: a pause of random length keeps one task's end
            # from setting the next one's phase against its ticks.
            time.sleep(random.uniform(0.0, SCHEDULER_INTERVAL_S))
            handle = stamp.schedule(delay=args.delay)
            eta = handle.task.eta
            if eta.tzinfo is None:  # huey keeps naive UTC times (utc=True)
                eta = eta.replace(tzinfo=datetime.UTC)
            lateness.append(result_of(handle, consumer, 30 + args.delay) - eta.timestamp())
        if lateness:
            out["delayed"] = {"delay_s": args.delay, "handler": percentiles(lateness)}
    finally:
        consumer.stop()
    flush(r)
    return out


def main() -> int:
    import huey as huey_package

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--single-jobs", type=int, default=5_000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[8])
    p.add_argument("--latency-jobs", type=int, default=300)
    p.add_argument("--delayed-jobs", type=int, default=30)
    p.add_argument("--delay", type=float, default=0.2)
    args = p.parse_args()
    if URL_ENV not in os.environ:
        p.error(f"${URL_ENV} must name the server")
    r = redis.Redis.from_url(os.environ[URL_ENV])
    flush(r)
    report: dict[str, Any] = {"huey": huey_package.__version__}
    print(f"huey {huey_package.__version__}: enqueue ...", file=sys.stderr, flush=True)
    report["enqueue"] = bench_enqueue(r, args.single_jobs)
    flush(r)
    before = int(r.info("memory")["used_memory"])
    for _ in range(args.jobs):
        noop()
    grown = int(r.info("memory")["used_memory"]) - before
    report["memory"] = {
        "jobs": args.jobs,
        "used_memory_delta": grown,
        "per_job_used_memory": grown / args.jobs,
    }
    flush(r)
    report["burn"] = []
    for threads in args.concurrency:
        print(f"huey: burn-down, {threads} threads ...", file=sys.stderr, flush=True)
        report["burn"].append(bench_burn(r, args.jobs, threads))
    print("huey: latency ...", file=sys.stderr, flush=True)
    report["latency_threads"] = args.concurrency[0]
    report.update(bench_latency(r, args))
    r.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
