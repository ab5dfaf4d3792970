"""``dtaskq demo``: three in-process workers share one task while its progress is printed.

The demo needs nothing but a server: it starts an embedded one unless ``DTASKQ_REDIS_URL``
(or ``url``) names an existing server, in which case it works under a key prefix of its own
and deletes its keys afterwards.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid

from .client import Client
from .errors import TaskNotRunning, UnitAlreadyTerminal, UnitNotReady, UnitWrongNode
from .models import Task, TaskRef, TaskStatus, UnitSpec, UnitStatus
from .server import ENV_URL, redis_url_or_embedded

NAMESPACE = "demo"
TASK_ID = "reindex-products"
GROUPS = {"tenant-a": ["a-1", "a-2", "a-3", "a-4", "a-5"], "tenant-b": ["b-1", "b-2", "b-3", "b-4"]}
FLAKY_UNIT = "b-2"
"""The unit whose first attempt fails with a retryable error."""
NODES = ("node-1", "node-2", "node-3")
PROGRESS_STEPS = 4
STEP_SECONDS = 0.12
IDLE_SECONDS = 0.03
POLL_SECONDS = 0.05
DEADLINE_SECONDS = 30.0


class _Console:
    """Timestamped lines from several threads, one whole line at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start = time.monotonic()

    def say(self, text: str) -> None:
        with self._lock:
            print(f"[{time.monotonic() - self._start:5.2f}s] {text}", flush=True)


def _worker(
    client: Client, ref: TaskRef, node: str, console: _Console, stop: threading.Event
) -> None:
    """Works on PENDING units of ``ref`` until the task leaves STARTED or ``stop`` is set."""
    rng = random.Random(node)
    while not stop.is_set():
        task = client.get_task(ref.namespace, ref.task_id)
        if task is None or task.status.is_terminal:
            return
        pending = [u.id for u in task.units.values() if u.status is UnitStatus.PENDING]
        rng.shuffle(pending)
        worked = False
        for unit in pending:
            try:
                token = client.claim_unit(ref, node, unit)
            except (UnitWrongNode, UnitNotReady, UnitAlreadyTerminal):
                # Another node won the race, or the unit is backing off after a failure.
                continue
            except TaskNotRunning:
                return
            _work(client, ref, node, unit, token, console)
            worked = True
            break
        if not worked:
            stop.wait(IDLE_SECONDS)


def _work(
    client: Client, ref: TaskRef, node: str, unit: str, token: int, console: _Console
) -> None:
    """Runs one claimed unit: a few progress reports, then complete (or the planned failure)."""
    for step in range(1, PROGRESS_STEPS + 1):
        time.sleep(STEP_SECONDS)
        if unit == FLAKY_UNIT and token == 1 and step == PROGRESS_STEPS // 2:
            retried = client.fail_unit(
                ref, node, unit, "simulated transient error", token=token, retryable=True
            )
            console.say(
                f"{node}: {unit} failed on attempt {token} "
                f"({'will be retried' if retried else 'final'})"
            )
            return
        client.update_progress(ref, node, unit, step / PROGRESS_STEPS, token=token)
    client.complete_unit(ref, node, unit, token=token)


def _bar(progress: float, width: int = 10) -> str:
    filled = round(progress * width)
    return "#" * filled + "." * (width - filled)


def _describe(task: Task) -> dict[str, str]:
    """One display line per unit, so that a change in any shown field is a change of line."""
    lines = {}
    for unit in sorted(task.units.values(), key=lambda u: (u.group, u.id)):
        lines[unit.id] = (
            f"{unit.group}/{unit.id:<4} {unit.status.value:<11} {unit.node or '-':<7} "
            f"attempt {unit.attempt}  [{_bar(unit.progress)}] {unit.progress:4.0%}"
        )
    return lines


def _print_final(task: Task, elapsed: float) -> None:
    print()
    print(f"task {task.namespace}/{task.task_id} version {task.version}: {task.status.value}")
    print(f"finished in {elapsed:.2f} s" + (f"; error: {task.error}" if task.error else ""))
    print(f"{'unit':<5} {'group':<9} {'node':<7} {'status':<11} {'attempts':>8} {'progress':>8}")
    for unit in sorted(task.units.values(), key=lambda u: (u.group, u.id)):
        note = f"  retried after: {unit.error}" if unit.attempt > 1 else ""
        print(
            f"{unit.id:<5} {unit.group:<9} {unit.node or '-':<7} {unit.status.value:<11} "
            f"{unit.attempt:>8} {unit.progress:>8.0%}{note}"
        )


def _delete_prefix(client: Client, prefix: str) -> None:
    """Removes every key the demo created on a server it does not own."""
    for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
        batch = list(client.redis.scan_iter(match=pattern, count=1000))
        if batch:
            client.redis.delete(*batch)


def run_demo(url: str | None = None) -> int:
    """Runs the demo against ``url``, ``$DTASKQ_REDIS_URL`` or an embedded server.

    Returns 0 when the task FINISHED, 1 otherwise (a failed task, a worker error or a run
    longer than 30 s).
    """
    external = bool(url or os.environ.get(ENV_URL))
    server = contextlib.nullcontext(url) if url else redis_url_or_embedded()
    with server as server_url:
        # A prefix of its own keeps the demo clear of any other data on a shared server.
        prefix = f"dtaskq-demo-{uuid.uuid4().hex[:8]}" if external else "dtaskq-demo"
        where = "existing server" if external else "embedded server"
        print(f"dtaskq demo on the {where} at {server_url} (key prefix {prefix!r})")
        with Client.from_url(server_url, prefix=prefix) as observer:
            try:
                return _run(server_url, prefix, observer)
            finally:
                if external:
                    _delete_prefix(observer, prefix)


def _run(url: str, prefix: str, observer: Client) -> int:
    units = [UnitSpec(unit, group) for group, ids in GROUPS.items() for unit in ids]
    ref = observer.add_task(
        NAMESPACE,
        TASK_ID,
        units=units,
        lease_ms=5_000,
        max_attempts=2,
        retry_backoff_ms=150,
        completed_ttl_ms=60_000,
    )
    print(
        f"task {ref.namespace}/{ref.task_id} version {ref.version}: {len(units)} units in "
        f"{len(GROUPS)} groups, max_attempts=2; workers {', '.join(NODES)}; "
        f"unit {FLAKY_UNIT} fails once"
    )
    console = _Console()
    stop = threading.Event()
    errors: list[Exception] = []
    clients = [Client.from_url(url, prefix=prefix) for _ in NODES]

    def guarded(client: Client, node: str) -> None:
        try:
            _worker(client, ref, node, console, stop)
        except Exception as exc:
            errors.append(exc)
            console.say(f"{node}: stopped by {type(exc).__name__}: {exc}")

    threads = [
        threading.Thread(target=guarded, args=(client, node), name=node, daemon=True)
        for client, node in zip(clients, NODES, strict=True)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    shown: dict[str, str] = {}
    task: Task | None = None
    try:
        while time.monotonic() - started < DEADLINE_SECONDS:
            task = observer.get_task(NAMESPACE, TASK_ID)
            if task is None:
                break
            for unit_id, line in _describe(task).items():
                if shown.get(unit_id) != line:
                    shown[unit_id] = line
                    console.say(line)
            if task.status.is_terminal or errors:
                break
            time.sleep(POLL_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(DEADLINE_SECONDS)
        for client in clients:
            client.close()
    elapsed = time.monotonic() - started
    if elapsed >= DEADLINE_SECONDS:
        print(f"gave up after {DEADLINE_SECONDS:g} s")
    if task is None:
        print("the task disappeared")
        return 1
    _print_final(task, elapsed)
    return 0 if task.status is TaskStatus.FINISHED and not errors else 1
