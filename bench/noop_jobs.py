"""The job handlers of ``bench/jobs.py``: no-op jobs, sync and ``async def``.

``dtaskq worker --queue Q --handlers noop_jobs`` loads them with ``bench/`` on PYTHONPATH.

- ``noop`` and ``noop_async`` do nothing and return None, except in the first job a worker
  process runs, which returns ``[pid, time.time(), time.process_time()]``: when the process
  began its first job, and the CPU it had used by then (start-up and the first claim). The
  benchmark reads those from the job records after the drain, to time the drain from its
  first job and to leave the workers' start-up out of their CPU per job. Telling the first
  job apart costs one ``next()`` on a shared counter, atomic under the GIL.
- ``stamp`` and ``stamp_async`` return ``time.time()`` as they begin: when a handler started,
  for the latency measures (the producer runs on the same machine, so the clocks agree).
"""

from __future__ import annotations

import itertools
import os
import time

from dtaskq import Registry

registry = Registry("bench-jobs")
_jobs_run = itertools.count()


def _first_job() -> list[float] | None:
    """``[pid, unix time, process CPU seconds]`` for the process's first job, else None."""
    if next(_jobs_run) == 0:
        return [os.getpid(), time.time(), time.process_time()]
    return None


@registry.handler("noop")
def noop() -> list[float] | None:
    """Does nothing (but report the process's first job)."""
    return _first_job()


@registry.handler("noop_async")
async def noop_async() -> list[float] | None:
    """Does nothing on the worker's event loop (but report the process's first job)."""
    return _first_job()


@registry.handler("stamp")
def stamp() -> float:
    """When this handler began (unix time)."""
    began = time.time()
    next(_jobs_run)
    return began


@registry.handler("stamp_async")
async def stamp_async() -> float:
    """When this handler began (unix time), on the worker's event loop."""
    began = time.time()
    next(_jobs_run)
    return began
