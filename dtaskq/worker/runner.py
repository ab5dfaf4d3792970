"""A ready-made task handle: runs one function per claimed unit (``docs/runtime.md``)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .. import validate
from ..errors import DtaskqError, LeaseLost, TaskNotRunning, UnitNotReady
from ..models import ClaimedUnit, Task
from .recorder import Recorder

log = logging.getLogger("dtaskq.worker")

_IDLE_POLL_S = 0.1
"""How often an idle thread of a named task checks whether its siblings are done."""
_RETRY_S = 1.0
"""How long a thread waits after a call failed before it tries again."""


class FatalError(Exception):
    """Raised by a unit function to fail its unit at once, with no retry even when the task
    allows more attempts. Any other exception is reported as retryable."""


@dataclass
class UnitContext:
    """What a unit function gets: its unit, and the means to report on it."""

    task: Task
    unit: str
    token: int
    recorder: Recorder
    _handle: UnitRunner

    @property
    def unit_number(self) -> int:
        """The unit id of a range task as an ``int``."""
        return int(self.unit)

    @property
    def terminated(self) -> bool:
        """True once the work should stop: the task left STARTED, the worker is shutting down
        past its grace period, or this node lost the unit's lease (its outcome will then not
        be reported). Long units poll it."""
        return self._handle.terminating or self.recorder.is_lost(self.unit)

    def progress(self, value: float) -> bool:
        """Reports progress in [0, 1], throttled; True when it was forwarded. False too once
        the unit's lease is lost, which :attr:`terminated` then says."""
        return self.recorder.progress(self.unit, value)

    def heartbeat(self) -> None:
        """Renews this node's leases on the task now."""
        self.recorder.heartbeat()


UnitFunction = Callable[[UnitContext], object] | Callable[[UnitContext], Awaitable[object]]


class UnitRunner:
    """Runs ``fn`` once per unit it claims, on ``concurrency`` threads (default: as many as
    the worker runs units at once), until no unit is left for this node; a
    :class:`~dtaskq.worker.TaskHandle`. The worker's limit holds across all its tasks.

    Range tasks are claimed with ``claim_next`` (each thread continues its span); named tasks
    by trying each unit that is not terminal and not held by another node, or only those in
    ``units`` when given. With ``batch`` > 1 each thread claims that many range units in one
    call (``Client.claim``) and runs them in turn: fewer round trips for short units. A
    coroutine function runs on the event loop of its thread, made for the thread's first
    coroutine and closed when the thread ends, so that what a unit leaves on it (connections,
    tasks) serves the thread's next units.

    ``fn`` returning completes the unit, unless it returned after termination (its work may
    be partial: the unit is left to the next claimer); raising fails it, retryably unless it
    raised :class:`FatalError`. Either way only that unit is affected. Once the unit's lease
    is lost, nothing is reported on it at all: its next claimer runs it.
    """

    def __init__(
        self,
        task: Task,
        recorder: Recorder,
        fn: UnitFunction,
        *,
        concurrency: int | None = None,
        units: Iterable[str] | None = None,
        batch: int = 1,
    ) -> None:
        self.task = task
        self._batch = validate.integer(batch, "batch", 1, 1000)
        self.recorder = recorder
        self._fn = fn
        self._terminate = threading.Event()
        self._extra = {"ns": task.namespace, "task": task.task_id}
        self._lock = threading.Lock()
        self._only = None if units is None else set(units)
        self._running: set[str] = set()
        self._per_thread = threading.local()
        self._named: list[str] | None = None
        if task.unit_count is None:
            self._named = self._candidates(task)
        self._threads = [
            threading.Thread(target=self._loop, name=f"dtaskq-unit-{task.task_id}", daemon=True)
            for _ in range(concurrency or recorder.gate.slots)
        ]
        self._active = len(self._threads)
        """Threads not waiting idle: while one is, it may still free or return units."""
        for thread in self._threads:
            thread.start()

    def _candidates(self, task: Task) -> list[str]:
        """Named units worth trying: not terminal, within ``units`` if given, not running
        here already (a claim of a unit held here would hand it out a second time)."""
        return [
            u.id
            for u in task.units.values()
            if not u.status.is_terminal
            and (self._only is None or u.id in self._only)
            and u.id not in self._running
        ]

    @property
    def terminating(self) -> bool:
        """True once :meth:`terminate` was called."""
        return self._terminate.is_set()

    def terminate(self) -> None:
        """Claims no further unit and tells running ones (``UnitContext.terminated``)."""
        self._terminate.set()

    def done(self) -> bool:
        """True once every thread has stopped."""
        return not any(t.is_alive() for t in self._threads)

    def join(self, timeout: float | None = None) -> None:
        """Waits for the threads to stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        last: int | None = None
        batch: list[ClaimedUnit] = []  # range units claimed ahead, not started yet
        counted = True  # this thread is one of ``_active``
        try:
            while not self._terminate.is_set() and self.recorder.gate.enter():
                idle = False
                try:
                    claimed = self._claim(last, batch)
                    if claimed is None:
                        idle = True
                    else:
                        unit, token = claimed
                        if self._named is None:
                            last = int(unit)
                        self._run(unit, token)
                except TaskNotRunning:
                    return
                except UnitNotReady as exc:
                    self._terminate.wait((exc.retry_after_ms or 100) / 1000)
                except DtaskqError as exc:
                    log.warning("claim failed: %s", exc, extra=self._extra)
                    self._terminate.wait(_RETRY_S)
                except Exception:  # a dead thread would leave the task's units to others
                    log.exception("unit thread failed", extra=self._extra)
                    self._terminate.wait(_RETRY_S)
                finally:
                    self.recorder.gate.leave()
                if idle:
                    counted = False  # the wait for more units takes the thread out of the count
                    if not self._more_named_units():
                        return
                    counted = True
        finally:
            if counted:
                with self._lock:
                    self._active -= 1
            # Units claimed ahead but never started go back at once, not after their leases.
            if batch:
                self._report(lambda: self.recorder.release_all(batch))
            self._close_event_loop()

    def _claim(self, last: int | None, batch: list[ClaimedUnit]) -> tuple[str, int] | None:
        """The next unit this thread runs and its token, or None when none is left."""
        if self._named is None:
            if not batch:
                claimed = self.recorder.claim_range(last, self._batch)
                if not isinstance(claimed, list):
                    return None
                batch.extend(claimed)
            unit = batch.pop(0)
            return str(unit), unit.token
        while True:
            with self._lock:
                if not self._named:
                    return None
                unit_id = self._named.pop(0)
            try:
                token = self.recorder.claim(unit_id)
            except Exception:  # not claimed (backing off, server unreachable): try it later
                with self._lock:
                    self._named.append(unit_id)
                raise
            if token is not None:
                return unit_id, token

    def _more_named_units(self) -> bool:
        """Named tasks: while sibling threads still run units, waits (holding no slot) for
        units to come back (a dead node's lease ran out, a retry) and lists them again. True
        when there is something to try (the thread is counted active again); False once every
        thread is idle, on termination, or for range tasks."""
        with self._lock:
            self._active -= 1
        if self._named is None:
            return False
        relist = False
        while not self._terminate.is_set():
            with self._lock:
                if self._named:
                    self._active += 1
                    return True
                if not self._active:
                    return False  # every thread idle: nothing more can come back to us
            if relist or self.recorder.take_returned():
                relist = not self._relist()
                if relist:
                    self._terminate.wait(_RETRY_S)
            else:
                self.recorder.wait_returned(_IDLE_POLL_S)
        return False

    def _relist(self) -> bool:
        """Lists the units that came back; False when the task could not be read."""
        try:
            task = self.recorder.client.get_task(self.task.namespace, self.task.task_id)
        except DtaskqError as exc:
            log.warning("listing units failed: %s", exc, extra=self._extra)
            return False
        except Exception:
            log.exception("listing units failed", extra=self._extra)
            return False
        if task is None or task.version != self.task.version:
            return True
        with self._lock:
            assert self._named is not None
            self._named.extend(u for u in self._candidates(task) if u not in self._named)
        return True

    def _run(self, unit: str, token: int) -> None:
        with self._lock:
            self._running.add(unit)
        try:
            self._run_unit(unit, token)
        finally:
            with self._lock:
                self._running.discard(unit)

    def _run_unit(self, unit: str, token: int) -> None:
        ctx = UnitContext(self.task, unit, token, self.recorder, self)
        extra = {**self._extra, "unit": unit}
        error = ""
        retry = True
        try:
            result = self._fn(ctx)
            if inspect.isawaitable(result):
                self._event_loop().run(_awaited(result))
        # Whatever the unit raised (SystemExit, a cancelled coroutine too) fails only the unit.
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            retry = not isinstance(exc, FatalError)
        if self.recorder.is_lost(unit):
            # Another claimer has the unit or will have it: nothing this run did counts, and
            # a report could only be turned away.
            log.info("lease lost: outcome dropped%s", f" ({error})" if error else "", extra=extra)
            self.recorder.release(unit)
            return
        if error:
            log.warning("unit failed: %s", error, extra=extra)
            if self._report(lambda: self.recorder.fail(unit, error, retry)):
                self._retry_later(unit)
            return
        if ctx.terminated:
            # Work that returns after being told to stop may be partial: leave the unit to
            # whoever takes it next rather than complete it.
            log.info("unit abandoned", extra=extra)
            self._report(lambda: self.recorder.release(unit))
            return
        self._report(lambda: self.recorder.complete(unit))

    def _event_loop(self) -> asyncio.Runner:
        """This thread's event loop (a new one costs more than many short units)."""
        loop: asyncio.Runner | None = getattr(self._per_thread, "loop", None)
        if loop is None:
            loop = self._per_thread.loop = asyncio.Runner()
        return loop

    def _close_event_loop(self) -> None:
        """Cancels what the thread's units left running on its loop, and closes it."""
        loop: asyncio.Runner | None = getattr(self._per_thread, "loop", None)
        if loop is None:
            return
        try:
            loop.close()
        except Exception:  # the units are over: nothing is left to fail
            log.exception("closing the event loop failed", extra=self._extra)

    def _retry_later(self, unit: str) -> None:
        """A unit put back for a retry comes back to this runner once its backoff is over."""
        if self._named is None:
            self.recorder.units_returned()
        else:
            with self._lock:
                self._named.append(unit)

    def _report(self, report: Callable[[], object]) -> object:
        """What ``report`` returned; None when the report was rejected or failed."""
        try:
            return report()
        except (LeaseLost, TaskNotRunning) as exc:
            # Someone else owns the unit now, or the task ended: the outcome no longer counts.
            log.info("report dropped: %s", exc, extra=self._extra)
        except DtaskqError as exc:
            # The lease runs out and another claimer redoes the unit.
            log.warning("report failed: %s", exc, extra=self._extra)
        except Exception:  # as above; the thread goes on with the next unit
            log.exception("report failed", extra=self._extra)
        return None


async def _awaited(result: Awaitable[object]) -> None:
    await result
