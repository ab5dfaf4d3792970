"""``dtaskq demo``: three worker processes share two tasks; one is killed with SIGKILL mid-way.

The demo adds a range task (:data:`~dtaskq.demo_provider.MERGE_UNITS` units) and a named-unit
task of two tenants' shards with a group per tenant and a prepare barrier, then starts three
``dtaskq worker`` processes running :mod:`dtaskq.demo_provider`. Once a quarter of the range
task is done it kills ``node-2`` while that node holds units, and follows the others taking
those units over when their leases run out. Progress bars read the tasks from Redis; a plain
summary follows, then the survivors get SIGTERM.

The demo needs nothing but a server: it starts an embedded one unless ``--url`` or
``$DTASKQ_REDIS_URL`` names an existing server, in which case it works under a key prefix of
its own and deletes its keys afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from .client import Client
from .demo_provider import (
    MERGE_TASK,
    MERGE_UNITS,
    NAMESPACE,
    NODE_ENV,
    PREFIX_ENV,
    REINDEX_TASK,
    SHARDS_ENV,
    TENANTS,
    DemoKeys,
)
from .models import Task, TaskRef, TaskStatus, UnitSpec, UnitStatus
from .ops import TaskOptions
from .server import ENV_URL, redis_url_or_embedded
from .worker.processes import WorkerProcesses

NODES = ("node-1", "node-2", "node-3")
VICTIM = "node-2"
"""The node killed mid-way. It holds no shard, since a node that completed units of a task
with a barrier must ack before the task can finish, and a dead node never does."""
SHARD_HOSTS = {"node-1": ("a-1", "a-2", "b-1", "b-2"), "node-3": ("a-3", "a-4", "b-3", "b-4")}
LEASE_MS = 2_000
WORKER_CONCURRENCY = 3
KILL_AT = 0.25
"""Share of the range task done when the victim is killed."""
POLL_S = 0.1
DEADLINE_S = 60.0
SETTLE_S = 3.0
"""How long to wait, after both tasks ended, for the survivors' ``on_task_completed``."""
STOP_TIMEOUT_S = 15.0
TOTAL_UNITS = MERGE_UNITS + sum(len(shards) for shards in TENANTS.values())


def run_demo(url: str | None = None) -> int:
    """Runs the demo against ``url``, ``$DTASKQ_REDIS_URL`` or an embedded server.

    Returns 0 when both tasks FINISHED, the victim's units were done by the others and the
    survivors stopped cleanly; 1 otherwise (including a run longer than 60 s).
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
                return _Demo(server_url, prefix, observer).run()
            finally:
                if external:
                    _delete_prefix(observer, prefix)


@dataclass
class _Kill:
    """The victim's death: when, and the units it held then."""

    at: float
    """Unix time of the SIGKILL."""
    elapsed: float
    units: dict[str, list[str]]
    """Task id -> units the victim held."""
    reclaim: tuple[float, str] | None = None
    """Seconds from the kill to the first of its units beginning elsewhere, and a note."""
    done_after: float | None = None
    finishers: Counter[str] = field(default_factory=Counter)


class _Demo:
    """One run: the tasks, the workers, the live view and the summary."""

    def __init__(self, url: str, prefix: str, observer: Client) -> None:
        self.url = url
        self.prefix = prefix
        self.client = observer
        self.keys = DemoKeys(prefix)
        self.console = Console(highlight=False)
        self.started = time.monotonic()
        self.kill: _Kill | None = None
        self.tasks: dict[str, Task] = {}
        self.done: dict[str, dict[str, str]] = {MERGE_TASK: {}, REINDEX_TASK: {}}
        self._statuses: dict[str, TaskStatus] = {}
        self._log_seen = 0
        self.callbacks: list[dict[str, str]] = []

    def say(self, text: str) -> None:
        """One timeline line above the bars."""
        self.console.print(
            f"[{time.monotonic() - self.started:5.2f}s] {text}", markup=False, soft_wrap=True
        )

    def run(self) -> int:
        refs = self._add_tasks()
        env = {ENV_URL: self.url, PREFIX_ENV: self.prefix}
        with WorkerProcesses([sys.executable, "-m", "dtaskq", "worker"], env) as workers:
            return self._run(refs, workers)

    def _add_tasks(self) -> list[TaskRef]:
        # Added before the workers start, so that they find both at their first pass.
        options: TaskOptions = {
            "lease_ms": LEASE_MS,
            "max_attempts": 3,
            "completed_ttl_ms": 600_000,
        }
        merge = self.client.add_task(
            NAMESPACE, MERGE_TASK, unit_count=MERGE_UNITS, workers_hint=3, **options
        )
        shards = [UnitSpec(unit, tenant) for tenant, units in TENANTS.items() for unit in units]
        barrier: TaskOptions = {**options, "prepare_barrier": True}
        reindex = self.client.add_task(NAMESPACE, REINDEX_TASK, units=shards, **barrier)
        print(
            f"task {NAMESPACE}/{MERGE_TASK} version {merge.version}: {MERGE_UNITS} range units, "
            f"workers_hint 3, lease {LEASE_MS} ms"
        )
        hosts = "; ".join(f"{n} holds {' '.join(s)}" for n, s in SHARD_HOSTS.items())
        print(
            f"task {NAMESPACE}/{REINDEX_TASK} version {reindex.version}: {len(shards)} shards "
            f"in groups {', '.join(TENANTS)}, prepare barrier; {hosts}; {VICTIM} holds none"
        )
        return [merge, reindex]

    def _run(self, refs: list[TaskRef], workers: WorkerProcesses) -> int:
        options = [
            *("--prefix", self.prefix, "--namespace", NAMESPACE),
            *("--provider", "dtaskq.demo_provider:factory"),
            *("--concurrency", str(WORKER_CONCURRENCY), "--lease-ms", str(LEASE_MS)),
            *("--grace-ms", str(LEASE_MS), "--log-level", "INFO"),
        ]
        for node in NODES:
            shards = ",".join(SHARD_HOSTS.get(node, ()))
            pid = workers.start(
                node, [*options, "--node-id", node], {NODE_ENV: node, SHARDS_ENV: shards}
            )
            print(f"started {node} (pid {pid})")
        command = ["python", *workers.command[1:], *options, "--node-id", "<node>"]
        print(f"worker command: {' '.join(command)}")
        with self._bars() as bars:
            finished = self._watch(workers, bars)
            if finished:
                self._settle(bars)
        workers.stop(STOP_TIMEOUT_S)
        return self._summary(refs, workers, finished)

    # -- the live view -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _bars(self) -> Iterator[_Bars]:
        progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            refresh_per_second=8,
        )
        with progress:
            yield _Bars(progress)

    def _watch(self, workers: WorkerProcesses, bars: _Bars) -> bool:
        """Follows the run until both tasks ended and the victim's units are done; False when
        the deadline passed first."""
        while time.monotonic() - self.started < DEADLINE_S:
            self._read()
            bars.show(self)
            dead = [
                n
                for n, p in workers.procs.items()
                if n not in workers.exits and p.poll() is not None
            ]
            if dead:
                self.say(f"{', '.join(dead)} exited on its own: giving up")
                return False
            if self.kill is None and self._victim_due():
                self._kill(workers, bars)
            elif self.kill is not None:
                self._follow_kill()
            if self.kill is not None and self._ended() and self.kill.done_after is not None:
                return True
            time.sleep(POLL_S)
        self.say(f"gave up after {DEADLINE_S:g} s")
        return False

    def _settle(self, bars: _Bars) -> None:
        """Waits briefly for every survivor to report ``on_task_completed`` of both tasks."""
        wanted = {(n, t) for n in NODES if n != VICTIM for t in (MERGE_TASK, REINDEX_TASK)}
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            self._read()
            bars.show(self)
            seen = {(c["node"], c["task"]) for c in self.callbacks if c["what"] == "task completed"}
            if wanted <= seen:
                return
            time.sleep(POLL_S)

    def _read(self) -> None:
        # Callbacks first: most of them come before the status change they lead to.
        for line in self.client.redis.lrange(self.keys.log(), self._log_seen, -1):
            self._log_seen += 1
            entry = json.loads(line)
            self.callbacks.append(entry)
            where = f"{entry['task']}/{entry['group']}" if "group" in entry else entry["task"]
            self.say(f"{entry['node']}: {entry['what']} {where}")
        for task_id in (MERGE_TASK, REINDEX_TASK):
            task = self.client.get_task(NAMESPACE, task_id)
            if task is None:
                continue
            self.tasks[task_id] = task
            if self._statuses.get(task_id) not in (None, task.status):
                self.say(f"{task_id}: {task.status.value}")
            self._statuses[task_id] = task.status
            raw = self.client.redis.hgetall(self.keys.done(task_id))
            self.done[task_id] = {_text(k): _text(v) for k, v in raw.items()}

    def _ended(self) -> bool:
        return len(self.tasks) == 2 and all(t.status.is_terminal for t in self.tasks.values())

    def _held_by(self, node: str) -> dict[str, list[str]]:
        held: dict[str, list[str]] = {}
        for task_id, task in self.tasks.items():
            units = [
                u.id
                for u in task.units.values()
                if u.node == node and u.status is UnitStatus.IN_PROGRESS
            ]
            if units:
                held[task_id] = sorted(units, key=_unit_order)
        return held

    def _victim_due(self) -> bool:
        merge = self.tasks.get(MERGE_TASK)
        if merge is None:
            return False
        done = merge.counts.get(UnitStatus.COMPLETED, 0)
        return done >= KILL_AT * MERGE_UNITS and bool(self._held_by(VICTIM))

    def _kill(self, workers: WorkerProcesses, bars: _Bars) -> None:
        at = workers.kill(VICTIM)
        self._read()  # what it held when it died
        held = self._held_by(VICTIM)
        if not held:
            # Its last reports reached the server after its death and completed its units:
            # nothing to take over. Try again.
            self.say(f"killed {VICTIM}, but its last reports completed its units; restarting it")
            workers.restart(VICTIM)
            return
        elapsed = time.monotonic() - self.started - (time.time() - at)
        self.kill = _Kill(at, elapsed, held)
        bars.killed = VICTIM
        units = "; ".join(f"{t} units {', '.join(u)}" for t, u in held.items()) or "nothing"
        self.say(
            f"killed {VICTIM} with SIGKILL, holding {units}; "
            f"its leases run out within {LEASE_MS / 1000:g} s"
        )

    def _follow_kill(self) -> None:
        kill = self.kill
        assert kill is not None
        if kill.reclaim is None:
            firsts = []
            for task_id, units in kill.units.items():
                raw = self.client.redis.hmget(self.keys.retaken(task_id), units)
                for unit, entry in zip(units, raw, strict=True):
                    if entry is not None:
                        node, token, at = _text(entry).split()
                        firsts.append((float(at) - kill.at, f"{task_id} unit {unit}", node, token))
            if firsts:
                after, what, node, token = min(firsts)
                kill.reclaim = (after, f"{what} began again on {node} with token {token}")
                self.say(
                    f"{what} of {VICTIM} running again on {node} (token {token}), "
                    f"{after:.2f} s after the kill"
                )
        if kill.done_after is None:
            finishers = Counter(
                self.done[task_id].get(unit)
                for task_id, units in kill.units.items()
                for unit in units
            )
            if None not in finishers and VICTIM not in finishers:
                kill.done_after = time.time() - kill.at
                kill.finishers = Counter({n: c for n, c in finishers.items() if n is not None})
                count = sum(finishers.values())
                self.say(
                    f"all {_units(count)} of {VICTIM} done by others, "
                    f"{kill.done_after:.2f} s after the kill"
                )

    # -- the summary -------------------------------------------------------------------------

    def _summary(self, refs: list[TaskRef], workers: WorkerProcesses, finished: bool) -> int:
        """Prints plain lines (tests read them); returns the exit code."""
        ok = finished
        print()
        print("summary")
        totals = {MERGE_TASK: MERGE_UNITS, REINDEX_TASK: TOTAL_UNITS - MERGE_UNITS}
        for ref in refs:
            task = self.tasks.get(ref.task_id)
            status = task.status.value if task else "MISSING"
            done = len(self.done[ref.task_id])
            ok &= status == TaskStatus.FINISHED and done == totals[ref.task_id]
            error = f"; error: {task.error}" if task and task.error else ""
            print(
                f"task {NAMESPACE}/{ref.task_id} version {ref.version}: {status}, "
                f"{done}/{totals[ref.task_id]} units done{error}"
            )
        per_node = Counter(n for done in self.done.values() for n in done.values())
        counts = ", ".join(f"{n} {per_node.get(n, 0)}" for n in NODES)
        print(f"units done per node: {counts}; total {sum(per_node.values())} of {TOTAL_UNITS}")
        kill = self.kill
        if kill is None:
            print(f"killed: {VICTIM} was never killed")
            ok = False
        else:
            held = sum(len(u) for u in kill.units.values())
            print(f"killed: {VICTIM} at {kill.elapsed:.2f} s holding {_units(held)}")
            if kill.reclaim is not None:
                print(f"reclaim time: {kill.reclaim[0]:.2f} s ({kill.reclaim[1]})")
            finishers = ", ".join(f"{n} {c}" for n, c in sorted(kill.finishers.items()))
            print(f"units of {VICTIM} finished by: {finishers or 'nobody'}")
            if kill.done_after is not None:
                print(f"all units of {VICTIM} done {kill.done_after:.2f} s after the kill")
            ok &= held > 0 and kill.reclaim is not None and kill.done_after is not None
        reindex = self.tasks.get(REINDEX_TASK)
        if reindex is not None:
            acks = "; ".join(
                f"{n} prepare {_ack(reindex.prepare_acks.get(n))}, "
                f"post {_ack(reindex.post_acks.get(n))}"
                for n in sorted({*reindex.nodes, *reindex.prepare_acks, *reindex.post_acks})
            )
            print(f"barrier acks: {acks or 'none'}")
        stopped = ", ".join(f"{n} exit {workers.exits.get(n)}" for n in NODES if n != VICTIM)
        print(f"workers stopped with SIGTERM: {stopped}")
        ok &= all(workers.exits.get(n) == 0 for n in NODES if n != VICTIM)
        if not ok:
            for node in NODES:
                print(f"--- {node} log (end) ---\n{workers.log_tail(node)}")
        print(f"result: {'OK' if ok else 'FAILED'}")
        return 0 if ok else 1


class _Bars:
    """One bar per task and one per node, redrawn from what the demo last read."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.killed: str | None = None
        self._tasks: dict[str, TaskID] = {
            MERGE_TASK: progress.add_task(MERGE_TASK, total=MERGE_UNITS, status=""),
            REINDEX_TASK: progress.add_task(
                REINDEX_TASK, total=TOTAL_UNITS - MERGE_UNITS, status=""
            ),
        }
        self._nodes = {n: progress.add_task(f"  {n}", total=TOTAL_UNITS, status="") for n in NODES}

    def show(self, demo: _Demo) -> None:
        """Updates every bar."""
        for task_id, bar in self._tasks.items():
            task = demo.tasks.get(task_id)
            if task is not None:
                done = task.counts.get(UnitStatus.COMPLETED, 0)
                self.progress.update(bar, completed=done, status=task.status.value)
        per_node = Counter(n for done in demo.done.values() for n in done.values())
        for node, bar in self._nodes.items():
            status = "killed (SIGKILL)" if node == self.killed else "units done"
            self.progress.update(bar, completed=per_node.get(node, 0), status=status)


def _ack(ack: object) -> str:
    if ack is None:
        return "-"
    return "ok" if getattr(ack, "success", False) else f"failed ({getattr(ack, 'error', '')})"


def _units(count: int) -> str:
    return f"{count} unit" if count == 1 else f"{count} units"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _unit_order(unit: str) -> tuple[int, str]:
    return (int(unit), "") if unit.isdigit() else (0, unit)


def _delete_prefix(client: Client, prefix: str) -> None:
    """Removes every key the demo created on a server it does not own."""
    for pattern in (f"{prefix}:*", f"{{{prefix}:*"):
        batch = list(client.redis.scan_iter(match=pattern, count=1000))
        if batch:
            client.redis.delete(*batch)
