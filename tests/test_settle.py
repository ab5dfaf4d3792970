"""Which groups a node's callbacks cover, read from real views of tasks."""

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

    def groups(node: str, complete_only: bool) -> dict[str, list[str]]:
        view = client.task_view(namespace, "t", node)
        assert view is not None
        found = local_groups(view, complete_only=complete_only)
        return {group: client.node_units(ref, node, group) for group in found}

    assert groups("n1", True) == {"a": ["a1"], "": ["c1"]}
    assert groups("n2", True) == {"a": ["a2"]}
    assert groups("n1", False) == {"a": ["a1"], "b": ["b1"], "": ["c1"]}
    assert groups("n3", False) == {}


def test_range_tasks_have_no_groups(client: dtaskq.Client, namespace: str) -> None:
    ref = client.add_task(namespace, "r", unit_count=3)
    first, second = client.claim(ref, "n1", max_units=2)
    client.complete_unit(ref, "n1", first, first.token)
    view = client.task_view(namespace, "r", "n1")
    assert view is not None and view.task.units == {}  # a node's view of a range task
    assert local_groups(view, complete_only=False) == []
    client.complete_unit(ref, "n1", second, second.token)
    client.complete_unit(ref, "n1", 2)
    view = client.task_view(namespace, "r", "n1")
    assert view is not None and view.task.status is dtaskq.TaskStatus.FINISHED
    assert local_groups(view, complete_only=True) == []
