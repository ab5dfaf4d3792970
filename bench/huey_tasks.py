"""The huey tasks of ``bench/huey_peer.py``, in a module of their own: huey names a task by its
module, so the producer and the consumer (``huey_consumer huey_tasks.huey``) must import them
from the same module, not one from ``__main__``.

``noop`` returns None, but for the first task of a consumer process, which returns ``[pid,
time.time(), time.process_time()]`` (as ``noop_jobs.noop`` does); ``stamp`` returns
``time.time()`` as it begins. ``store_none=True``: every task stores its result, as every
dtaskq job keeps its record and result, and the benchmark counts them to see the drain end.
"""

from __future__ import annotations

import itertools
import os
import time

from huey import RedisHuey

NAME = "benchpeer"
URL_ENV = "HUEY_PEER_URL"

# Port 1 refuses at once: nothing is reached unless $HUEY_PEER_URL names the server.
huey = RedisHuey(NAME, url=os.environ.get(URL_ENV, "redis://127.0.0.1:1/0"), store_none=True)
_tasks_run = itertools.count()


@huey.task()
def noop() -> list[float] | None:
    """Does nothing (but report the process's first task)."""
    if next(_tasks_run) == 0:
        return [os.getpid(), time.time(), time.process_time()]
    return None


@huey.task()
def stamp() -> float:
    """When this task began (unix time)."""
    began = time.time()
    next(_tasks_run)
    return began
