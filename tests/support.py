"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dtaskq

Rejects = Callable[..., Exception]
"""Type of the ``rejects`` fixture."""
Unchanged = Callable[..., Any]
"""Type of the ``unchanged`` fixture."""


def unit_of(client: dtaskq.Client, ref: dtaskq.TaskRef, unit_id: str) -> dtaskq.Unit:
    """The current state of one unit of ``ref`` (which must be the task's current version)."""
    task = client.get_task(ref.namespace, ref.task_id)
    assert task is not None and task.version == ref.version
    return task.units[unit_id]
