"""The read operations as I/O-free steps: task snapshots, a node's view of a task, the
summaries a node's resync reads, and listings."""

from __future__ import annotations

from . import codec, keys, validate
from .calls import Call, Router, Steps
from .models import Task, TaskRef, TaskSummary, TaskView
from .scripts import function

_GET = function("get_task")
_VIEW = function("task_view")
_SUMMARIES = function("list_summaries")
_NODE_UNITS = function("node_units")
_LIST = function("list_tasks")
_NAMESPACES = function("list_namespaces")
_LIST_PAGE = 500


def get_task(router: Router, namespace: str, task_id: str) -> Steps[Task | None]:
    """The latest version of a task, or None."""
    validate.namespace(namespace)
    validate.ident(task_id, "task id")
    part = yield from router.partition(namespace, task_id)
    if part is None:
        return None
    reply = yield Call(
        _GET, [part.task_key(task_id)], [task_id], {"namespace": namespace, "task_id": task_id}
    )
    return codec.decode_task(namespace, task_id, reply)


def task_view(router: Router, namespace: str, task_id: str, node: str) -> Steps[TaskView | None]:
    """What ``node``'s scheduler needs of the latest version of a task, or None."""
    validate.namespace(namespace)
    validate.ident(task_id, "task id")
    validate.ident(node, "node id")
    part = yield from router.partition(namespace, task_id)
    if part is None:
        return None
    reply = yield Call(
        _VIEW,
        [part.task_key(task_id)],
        [task_id, node],
        {"namespace": namespace, "task_id": task_id, "node": node},
    )
    return codec.decode_view(namespace, task_id, reply)


def node_units(router: Router, ref: TaskRef, node: str, group: str) -> Steps[list[str]]:
    """The named units ``node`` owns in ``group`` of a task version, in id order."""
    validate.ref_and_node(ref, node)
    validate.group(group)
    part = yield from router.partition(ref.namespace, ref.task_id)
    if part is None:
        return []
    reply = yield Call(
        _NODE_UNITS,
        [part.task_key(ref.task_id)],
        [ref.task_id, str(ref.version), node, group],
        {"namespace": ref.namespace, "task_id": ref.task_id, "version": ref.version, "node": node},
    )
    return [unit.decode("utf-8", "surrogateescape") for unit in reply]


def task_summaries(router: Router, namespace: str, node: str) -> Steps[list[TaskSummary]]:
    """Every task of a namespace as ``node``'s resync sees it: one call per partition and page
    of tasks, whatever the tasks' sizes."""
    validate.namespace(namespace)
    validate.ident(node, "node id")
    found: list[TaskSummary] = []
    for part in (yield from router.partitions(namespace)):
        cursor = ""
        while True:
            cursor_bytes, page = yield Call(
                _SUMMARIES, [part.index_key()], [node, cursor, _LIST_PAGE], {"namespace": namespace}
            )
            found += codec.decode_summaries(page)
            cursor = cursor_bytes.decode()
            if not cursor:
                break
    return found


def _activity_order(task: Task) -> tuple[bool, float, str]:
    moment = task.finished_at or task.started_at
    return (not task.is_active, -moment.timestamp(), task.task_id)


def list_tasks(router: Router, namespace: str | None = None) -> Steps[dict[str, list[Task]]]:
    """Tasks by namespace, without empty namespaces, ordered as rule 23 says."""
    if namespace is not None:
        validate.namespace(namespace)
    registry = yield Call(_NAMESPACES, [keys.namespaces_key(router.prefix)], [])
    counts = {k.decode(): int(v) for k, v in zip(registry[::2], registry[1::2], strict=True)}
    wanted = [namespace] if namespace is not None else sorted(counts)
    listing: dict[str, list[Task]] = {}
    for ns in wanted:
        tasks: list[Task] = []
        for index in range(counts.get(ns, 0)):
            part = keys.Partition(router.prefix, ns, index)
            cursor = ""
            while True:
                page = yield Call(
                    _LIST, [part.index_key()], [cursor, _LIST_PAGE], {"namespace": ns}
                )
                for raw_id in page:
                    task = yield from get_task(router, ns, raw_id.decode())
                    if task is not None:
                        tasks.append(task)
                if len(page) < _LIST_PAGE:
                    break
                cursor = page[-1].decode()
        if tasks:
            listing[ns] = sorted(tasks, key=_activity_order)
    return listing
