"""Which groups a node's callbacks cover, read from real task snapshots."""

from __future__ import annotations

import dtaskq
from dtaskq import UnitSpec
from dtaskq.worker.settle import local_groups


def test_groups_list_only_this_nodes_units_of_complete_groups(
    client: dtaskq.Client, namespace: str
) -> None:
    units = [UnitSpec("a1", "a"), UnitSpec("a2", "a"), UnitSpec("b1", "b"), UnitSpec("c1")]
    ref = client.add_task(namespace, "t", units=units)
    client.complete_unit(ref, "n1", "a1")
    client.complete_unit(ref, "n2", "a2")
    client.complete_unit(ref, "n1", "c1")
    client.claim_unit(ref, "n1", "b1")
    task = client.get_task(namespace, "t")
    assert task is not None
    assert local_groups(task, "n1", complete_only=True) == {"a": ["a1"], "": ["c1"]}
    assert local_groups(task, "n2", complete_only=True) == {"a": ["a2"]}
    assert local_groups(task, "n1", complete_only=False) == {"a": ["a1"], "b": ["b1"], "": ["c1"]}
    assert local_groups(task, "n3", complete_only=False) == {}


def test_range_tasks_have_no_groups(client: dtaskq.Client, namespace: str) -> None:
    ref = client.add_task(namespace, "r", unit_count=3)
    first, second = client.claim(ref, "n1", max_units=2)
    client.complete_unit(ref, "n1", first, first.token)
    task = client.get_task(namespace, "r")
    assert task is not None
    assert set(task.units) == {str(second)}  # the snapshot holds only the unit in flight
    assert local_groups(task, "n1", complete_only=False) == {}
    client.complete_unit(ref, "n1", second, second.token)
    client.complete_unit(ref, "n1", 2)
    task = client.get_task(namespace, "r")
    assert task is not None and task.status is dtaskq.TaskStatus.FINISHED
    assert local_groups(task, "n1", complete_only=True) == {}
