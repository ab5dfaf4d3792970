"""Random interleavings of reports from several nodes never break the storage invariants."""

from __future__ import annotations

from itertools import count

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dtaskq
from dtaskq.keys import Partition
from dtaskq.models import UnitStatus

NODES = ("n0", "n1", "n2")
UNITS = ("u0", "u1", "u2", "u3")

operation = st.tuples(
    st.sampled_from(["claim", "progress", "complete", "fail", "retry", "heartbeat", "sweep"]),
    st.sampled_from(NODES),
    st.sampled_from(UNITS),
    st.floats(min_value=0.0, max_value=1.0),
    st.booleans(),  # report with the node's last token, or with none
)

_task_ids = count()


def check_invariants(
    client: dtaskq.Client, r: redis.Redis, prefix: str, ref: dtaskq.TaskRef, seen: dict[str, float]
) -> None:
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None
    part = Partition(prefix, ref.namespace, 0)
    task_key, _, _, nodes_key, leases_key, *_ = part.task_keys(ref.task_id)

    owned: dict[str, int] = {}
    for unit in task.units.values():
        if unit.node is not None:
            owned[unit.node] = owned.get(unit.node, 0) + 1
        if unit.status is UnitStatus.IN_PROGRESS:
            assert unit.node is not None and unit.attempt >= 1
        if unit.status is UnitStatus.COMPLETED:
            assert unit.progress == 1.0 and unit.node is not None
        assert unit.progress >= seen.get(unit.id, 0.0), "stored progress went down"
        seen[unit.id] = unit.progress
    stored_counts = {k.decode(): int(v) for k, v in r.hgetall(nodes_key).items()}
    assert stored_counts == owned, "per-node ownership counts drifted from the units"

    completed = task.counts[UnitStatus.COMPLETED]
    assert int(r.hget(task_key, "units_completed") or 0) == completed
    if task.status is dtaskq.TaskStatus.FINISHED:
        assert completed == len(UNITS)
    if task.status is dtaskq.TaskStatus.STARTED:
        assert completed < len(UNITS)
        members = (m.decode().split("\n") for m in r.zrange(leases_key, 0, -1))
        leased = {unit for task_id, unit in members if task_id == ref.task_id}
        in_progress = {u.id for u in task.units.values() if u.status is UnitStatus.IN_PROGRESS}
        assert leased == in_progress, "lease index drifted from the units in progress"
    if task.status is dtaskq.TaskStatus.FAILED:
        assert task.counts[UnitStatus.FAILED] == 1
        assert task.error.startswith("unit ")


@pytest.mark.parametrize("lease_ms", [30_000, 1], ids=["lease-held", "lease-expiring"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(operation, min_size=1, max_size=30))
def test_any_interleaving_keeps_invariants(
    client: dtaskq.Client,
    r: redis.Redis,
    prefix: str,
    namespace: str,
    lease_ms: int,
    ops: list[tuple[str, str, str, float, bool]],
) -> None:
    """With leases that hold and with leases that expire at once (every call then meets
    expired leases), in any order of claims and reports."""
    ref = client.add_task(
        namespace,
        f"t{next(_task_ids)}",
        units=list(UNITS),
        max_attempts=2,
        retry_backoff_ms=0,
        lease_ms=lease_ms,
    )
    tokens: dict[tuple[str, str], int] = {}
    seen: dict[str, float] = {}
    for kind, node, unit, progress, use_token in ops:
        token = tokens.get((node, unit)) if use_token else None
        try:
            if kind == "claim":
                tokens[(node, unit)] = client.claim_unit(ref, node, unit)
            elif kind == "progress":
                got = client.update_progress(ref, node, unit, progress, token)
                if got is not None:
                    tokens[(node, unit)] = got
            elif kind == "complete":
                client.complete_unit(ref, node, unit, token)
            elif kind in ("fail", "retry"):
                client.fail_unit(ref, node, unit, "boom", token, retryable=kind == "retry")
            elif kind == "heartbeat":
                client.heartbeat(node, [(ref, unit, tokens.get((node, unit), 0))])
            else:
                client.sweep(ref.namespace)
        except (dtaskq.PermanentRejection, dtaskq.UnitNotReady):
            pass
        check_invariants(client, r, prefix, ref, seen)
