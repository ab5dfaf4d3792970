"""The worker runtime across real ``dtaskq worker`` processes (``docs/runtime.md``).

Every test runs worker subprocesses with tests/worker_provider.py, whose side effects go to a
Redis list (``workers.log``), and checks them against the task state in Redis.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

from worker_procs import Workers

import dtaskq
from dtaskq import TaskStatus, UnitSpec, UnitStatus, validate
from dtaskq.worker import default_node_id
from dtaskq.worker.runtime import as_node_id


def finished(client: dtaskq.Client, namespace: str, task_id: str) -> dtaskq.Task | None:
    task = client.get_task(namespace, task_id)
    return task if task is not None and task.status.is_terminal else None


def test_groups_and_prepare_barrier_across_three_nodes(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    # Each node claims only its own shards (prefix a, b or c); every group spans the three.
    units = [UnitSpec(f"{n}{g}", group=f"g{g}") for n in "abc" for g in range(3)]
    ref = client.add_task(namespace, "t", units=units, prepare_barrier=True)
    for node in "abc":
        workers.start(node, units=node, unit_ms=100)
    task = workers.until(lambda: finished(client, namespace, "t"), what="task end")

    assert task.status is TaskStatus.FINISHED
    assert task.version == ref.version
    for node in "abc":
        groups = workers.log("group", node=node)
        assert sorted((g["group"], tuple(g["units"])) for g in groups) == [
            (f"g{g}", (f"{node}{g}",)) for g in range(3)
        ]
        assert [c["status"] for c in workers.log("completed", node=node)] == ["SWAPPING"]
    assert set(task.nodes) == set(task.prepare_acks) == set(task.post_acks) == {"a", "b", "c"}
    assert all(a.success for a in [*task.prepare_acks.values(), *task.post_acks.values()])
    assert task.finished_at is not None
    assert task.finished_at >= max(a.acked_at for a in task.post_acks.values())
    # Every prepare ack came after the node's last group callback, every swap after all
    # prepare acks (the barrier holds every node back until all are ready).
    last_prepare = max(a.acked_at for a in task.prepare_acks.values()).timestamp()
    assert min(s["t"] for s in workers.log("swap")) >= last_prepare - 0.01


def test_a_failed_unit_terminates_other_nodes_handles_within_a_second(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    ref = client.add_task(namespace, "t", units=["a-bad", "b-long"])
    workers.start("a", units="a", unit_ms=500, fail="a-bad")
    workers.start("b", units="b", unit_ms=20_000)
    task = workers.until(lambda: finished(client, namespace, "t"), what="task end")
    assert task.status is TaskStatus.FAILED
    assert task.error == "unit a-bad failed: FatalError: unit broke"
    (terminated,) = workers.until(lambda: workers.log("terminated", node="b"), what="terminate")
    assert task.finished_at is not None
    assert terminated["t"] - task.finished_at.timestamp() < 1.0
    assert client.get_task(namespace, "t").units["b-long"].status is UnitStatus.IN_PROGRESS
    assert ref.version == task.version


def test_kill_9_hands_units_to_other_nodes_exactly_once(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "t", unit_count=60, workers_hint=3, lease_ms=2000)
    workers.start("victim", concurrency=1, unit_ms=1000)
    workers.until(lambda: workers.log("begin", node="victim"), what="victim claims")
    workers.start("a", unit_ms=100)
    workers.start("b", unit_ms=100)
    # Kill while the victim is inside a unit (units take 1 s), so nothing it did is half done.
    workers.until(lambda: len(workers.log("begin", node="victim")) >= 2, what="second unit")
    workers.signal("victim", signal.SIGKILL)
    killed_at = time.time()
    task = workers.until(lambda: finished(client, namespace, "t"), what="task end")

    assert task.status is TaskStatus.FINISHED
    assert task.finished_at is not None
    assert task.finished_at.timestamp() - killed_at < 2.0 + 2.0
    done = Counter(d["unit"] for d in workers.log("done"))
    assert done == Counter(str(u) for u in range(60))
    victims = {b["unit"] for b in workers.log("begin", node="victim")}
    redone = {b["unit"] for b in workers.log("begin") if b["node"] != "victim"}
    assert victims - {d["unit"] for d in workers.log("done", node="victim")} <= redone


def test_sticky_units_wait_for_their_node_to_restart(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    units = ["a1", "a2", "b1", "b2"]
    client.add_task(namespace, "t", units=units, lease_ms=1000, on_lease_expiry="sticky")
    workers.start("a", units="a", unit_ms=30_000)
    workers.until(lambda: len(workers.log("begin", node="a")) == 2, what="a holds its units")
    workers.signal("a", signal.SIGKILL)
    workers.wait("a")
    # b may claim anything not held by someone else: only b1 and b2.
    workers.start("b", unit_ms=50)
    workers.until(lambda: len(workers.log("done", node="b")) == 2, what="b's units")
    time.sleep(2.5)  # past the lease and a sweep: the units stay a's
    task = client.get_task(namespace, "t")
    assert {u: task.units[u].node for u in ("a1", "a2")} == {"a1": "a", "a2": "a"}
    assert {u.id for u in task.units.values() if u.status is UnitStatus.COMPLETED} == {"b1", "b2"}

    workers.start("a", units="a", unit_ms=50)
    task = workers.until(lambda: finished(client, namespace, "t"), what="task end")
    assert task.status is TaskStatus.FINISHED
    assert {u.id: u.node for u in task.units.values()} == {
        "a1": "a",
        "a2": "a",
        "b1": "b",
        "b2": "b",
    }
    assert {d["unit"] for d in workers.log("done", node="b")} == {"b1", "b2"}
    assert {d["unit"] for d in workers.log("done", node="a")} == {"a1", "a2"}


def test_a_worker_restarted_with_the_default_node_id_takes_its_sticky_units_back(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    node = default_node_id()
    client.add_task(namespace, "t", units=["u1", "u2"], lease_ms=1000, on_lease_expiry="sticky")
    workers.start("host", host_node_id=True, unit_ms=30_000)
    workers.until(lambda: len(workers.log("begin")) == 2, what="the worker holds both units")
    workers.signal("host", signal.SIGKILL)
    workers.wait("host")
    task = client.get_task(namespace, "t")
    assert {u.id: u.node for u in task.units.values()} == {"u1": node, "u2": node}

    workers.start("host", host_node_id=True, unit_ms=50)
    task = workers.until(lambda: finished(client, namespace, "t"), what="task end")
    assert task.status is TaskStatus.FINISHED
    assert {u.id: u.node for u in task.units.values()} == {"u1": node, "u2": node}


def test_default_node_ids_are_valid_ids() -> None:
    assert validate.is_ident(default_node_id())
    assert as_node_id("build host.example.com") == "build-host.example.com"
    assert as_node_id("{tag}\tx\x00") == "-tag--x-"
    assert as_node_id("\udcff") == "-"
    assert as_node_id("") == "localhost"
    long = as_node_id("é" * 150)
    assert long == "é" * 100 and validate.is_ident(long)


def test_a_worker_paused_past_its_lease_leaves_the_unit_to_another_node(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "t", units=["u1"], lease_ms=2000)
    workers.start("a", unit_ms=60_000, work="progress")
    workers.until(lambda: workers.log("begin", node="a"), what="a runs the unit")
    workers.signal("a", signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # Once a's lease runs out, b takes the unit over while a still sleeps.
        workers.start("b", unit_ms=4000, work="progress")
        workers.until(lambda: workers.log("begin", node="b"), what="b takes the unit")
        # Paused past the throttle interval too, so a's next progress report goes out.
        time.sleep(max(0.0, 5.0 - (time.monotonic() - stopped)))
    finally:
        workers.signal("a", signal.SIGCONT)
    # a learns that its lease is lost, stops the unit and reports nothing on it.
    workers.until(lambda: workers.log("terminated", node="a"), what="a stops the unit")
    task = workers.until(lambda: finished(client, namespace, "t"), what="task end")
    assert task.status is TaskStatus.FINISHED
    unit = task.units["u1"]
    assert (unit.status, unit.node, unit.attempt) == (UnitStatus.COMPLETED, "b", 2)
    assert [(d["node"], d["token"]) for d in workers.log("done")] == [("b", 2)]
    workers.signal("a", signal.SIGTERM)
    code, log = workers.wait("a")
    assert code == 0, log
    assert "unit failed" not in log and "lease lost: outcome dropped" in log


def test_sigterm_lets_units_finish_within_the_grace_period(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "t", units=["u1", "u2", "u3", "u4"])
    workers.start("a", concurrency=2, unit_ms=800, grace_ms=5000)
    workers.until(lambda: len(workers.log("begin")) == 2, what="two units running")
    workers.signal("a", signal.SIGTERM)
    code, err = workers.wait("a")
    assert code == 0, err
    task = client.get_task(namespace, "t")
    statuses = Counter(u.status for u in task.units.values())
    assert statuses == {UnitStatus.COMPLETED: 2, UnitStatus.PENDING: 2}, err
    assert task.status is TaskStatus.STARTED


def test_sigterm_releases_units_still_running_after_the_grace_period(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "t", units=["u1", "u2"], lease_ms=60_000)
    workers.start("a", concurrency=2, unit_ms=60_000, work="sleep", grace_ms=300)
    workers.until(lambda: len(workers.log("begin")) == 2, what="two units running")
    workers.signal("a", signal.SIGTERM)
    code, err = workers.wait("a")
    assert code == 0, err
    task = client.get_task(namespace, "t")
    assert {u.id: (u.status, u.node) for u in task.units.values()} == {
        "u1": (UnitStatus.PENDING, None),
        "u2": (UnitStatus.PENDING, None),
    }
    assert "released 2 units" in err
    # Another node takes them at once, not after the 60 s lease.
    workers.start("b", concurrency=2, unit_ms=10)
    task = workers.until(lambda: finished(client, namespace, "t"), timeout=10, what="task end")
    assert {u.node for u in task.units.values()} == {"b"}


def test_a_second_signal_exits_at_once(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "t", units=["u1"])
    workers.start("a", unit_ms=60_000, work="sleep", grace_ms=60_000)
    workers.until(lambda: workers.log("begin"), what="unit running")
    workers.signal("a", signal.SIGTERM)
    workers.until(lambda: "stopping:" in workers.procs.log("a"), what="graceful stop begun")
    workers.signal("a", signal.SIGTERM)
    code, _ = workers.wait("a", timeout=5)
    assert code == 128 + signal.SIGTERM


def test_blocking_or_cpu_bound_handlers_keep_their_leases(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "sleeps", units=["s"], lease_ms=1000)
    client.add_task(namespace, "spins", units=["c"], lease_ms=1000)
    workers.start("a", units="s", unit_ms=3000, work="sleep")
    workers.start("b", units="c", unit_ms=3000, work="spin")
    workers.until(lambda: len(workers.log("begin")) == 2, what="both units running")
    # A third node would take either unit the moment its lease ran out.
    workers.start("thief", unit_ms=10)
    for task_id, unit, node in (("sleeps", "s", "a"), ("spins", "c", "b")):
        task = workers.until(lambda t=task_id: finished(client, namespace, t), what=task_id)
        assert task.status is TaskStatus.FINISHED
        assert (task.units[unit].node, task.units[unit].attempt) == (node, 1)
    assert workers.log("begin", node="thief") == []


def test_cancel_terminates_handles_on_every_node_within_a_second(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    ref = client.add_task(namespace, "t", units=["a", "b", "c"])
    for node in "abc":
        workers.start(node, units=node, unit_ms=30_000)
    workers.until(lambda: len(workers.log("begin")) == 3, what="every node running")
    client.cancel_task(ref)
    cancelled = client.get_task(namespace, "t").finished_at.timestamp()
    terminated = workers.until(
        lambda: len(workers.log("terminated")) == 3 and workers.log("terminated")
    )
    assert {t["node"] for t in terminated} == {"a", "b", "c"}
    assert max(t["t"] for t in terminated) - cancelled < 1.0
    # on_task_completed runs on each node's callback pool, after (not with) the termination.
    completed = workers.until(
        lambda: len(workers.log("completed")) >= 3 and workers.log("completed"),
        what="every node's on_task_completed",
    )
    assert [c["status"] for c in completed] == ["CANCELLED"] * 3


def test_a_restarted_node_replays_callbacks_only_when_its_local_work_is_lost(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "t", units=[UnitSpec("u1", "g")], ack_barrier=True)
    workers.start("a")
    task = workers.until(lambda: finished(client, namespace, "t"), what="task end")
    assert task.status is TaskStatus.FINISHED and "a" in task.post_acks
    workers.signal("a", signal.SIGTERM)
    assert workers.wait("a")[0] == 0
    ran = [e["what"] for e in workers.log() if e["what"] in ("group", "swap", "completed")]
    assert ran == ["group", "swap", "completed"]

    workers.start("a", callbacks_done=1)
    workers.until(lambda: len(workers.log("asked")) == 1, what="recovery check")
    time.sleep(1.0)
    workers.signal("a", signal.SIGTERM)
    assert workers.wait("a")[0] == 0
    assert [e["what"] for e in workers.log() if e["what"] in ("group", "swap", "completed")] == ran

    workers.start("a", callbacks_done=0)
    workers.until(lambda: len(workers.log("completed")) == 2, what="replayed callbacks")
    replayed = [e["what"] for e in workers.log() if e["what"] in ("group", "swap", "completed")]
    assert replayed == ran * 2


def test_a_failing_handler_fails_only_its_unit_and_is_retried(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "t", units=["u1", "u2"], max_attempts=2, retry_backoff_ms=50)
    workers.start("a", flaky="u1")
    task = workers.until(lambda: finished(client, namespace, "t"), what="task end")
    assert task.status is TaskStatus.FINISHED
    assert (task.units["u1"].attempt, task.units["u2"].attempt) == (2, 1)


def test_local_state_is_cleaned_up_once_the_task_is_gone(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    ref = client.add_task(namespace, "t", units=["u1"], completed_ttl_ms=0)
    workers.start("a")
    workers.until(lambda: finished(client, namespace, "t"), what="task end")
    # The sweeper deletes the task past its TTL; the node then drops its local state.
    (cleanup,) = workers.until(lambda: workers.log("cleanup"), what="cleanup")
    assert (cleanup["task"], cleanup["version"]) == ("t", ref.version)
    assert client.get_task(namespace, "t") is None


def test_log_lines_name_node_namespace_task_and_unit(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "t", units=["u1"], max_attempts=1)
    workers.start("a", fail="u1", unit_ms=10)
    workers.until(lambda: finished(client, namespace, "t"), what="task end")
    workers.signal("a", signal.SIGTERM)
    _, err = workers.wait("a")
    lines = err.splitlines()
    assert lines and all(" node=a ns=" in line for line in lines), err
    assert any(f"ns={namespace} task=t unit=u1 unit failed" in line for line in lines), err


def test_a_worker_started_before_the_first_task_picks_it_up(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    workers.start("a", unit_ms=10)
    # The namespace has no partition yet when the worker starts.
    workers.until(lambda: "worker started" in workers.procs.log("a"), what="the worker")
    client.add_task(namespace, "t", unit_count=5)
    task = workers.until(lambda: finished(client, namespace, "t"), what="task end")
    assert task.status is TaskStatus.FINISHED
    assert sorted(d["unit"] for d in workers.log("done", node="a")) == ["0", "1", "2", "3", "4"]


def test_a_provider_bug_in_start_task_spares_the_other_tasks(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "broken", units=["u1"])
    client.add_task(namespace, "fine", units=["u1"])
    workers.start("a", broken_start="broken")
    task = workers.until(lambda: finished(client, namespace, "fine"), what="the fine task")
    assert task.status is TaskStatus.FINISHED
    assert client.get_task(namespace, "broken").status is TaskStatus.STARTED
    workers.signal("a", signal.SIGTERM)
    code, log = workers.wait("a")
    assert code == 0
    assert "task=broken unit=- start_task failed" in log


def test_a_failing_swap_fails_the_post_ack_and_the_task(
    client: dtaskq.Client, namespace: str, workers: Workers
) -> None:
    client.add_task(namespace, "t", units=[UnitSpec("u1", "g")], ack_barrier=True)
    workers.start("a", broken_swap=1)
    task = workers.until(lambda: finished(client, namespace, "t"), what="task end")
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "post-completion failed on node a: on_swap_requested: OSError: swap target missing"
    )
    assert not task.post_acks["a"].success
    assert [c["status"] for c in workers.log("completed")] == ["SWAPPING"]
