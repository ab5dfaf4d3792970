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
from ..errors import DtaskqError, LeaseLost, TaskNotRunning
from ..models import Task
from .recorder import Recorder

log = logging.getLogger("dtaskq.worker")

_IDLE_POLL_S = 0.1
"""How often an idle thread checks whether its siblings are done."""
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
    :class:`~dtaskq.worker.TaskHandle`. The worker's limit holds across all its tasks: a thread
    takes a slot while its task has units for it, and gives it back when it runs out.

    Each thread reports the units it completed in the same call that claims its next ones, so
    a unit costs one round trip, or a batch of ``batch`` units one round trip. Range tasks are
    claimed as ``claim_next`` would (each thread continues its span); named tasks with
    ``claim_any``, only units in ``units`` when given. A thread with nothing to claim waits,
    holding no slot, while its siblings still run units, and takes units that come back
    meanwhile (a dead node's lease ran out, a retry). A coroutine function runs on the event
    loop of its thread, made for the thread's first coroutine and closed when the thread ends,
    so that what a unit leaves on it (connections, tasks) serves the thread's next units.

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
        self._only = None if units is None else sorted(set(units))
        self._per_thread = threading.local()
        self._threads = [
            threading.Thread(target=self._loop, name=f"dtaskq-unit-{task.task_id}", daemon=True)
            for _ in range(concurrency or recorder.gate.slots)
        ]
        self._active = len(self._threads)
        """Threads not waiting idle: while one is, it may still free or return units."""
        if self._only == []:
            self._threads = []  # a filter that names no unit leaves nothing to run
        for thread in self._threads:
            thread.start()

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
        state = _Thread()
        counted = True  # this thread is one of ``_active``
        try:
            while not self._terminate.is_set() and self.recorder.gate.enter():
                try:
                    outcome = self._work(state)
                except Exception:  # a dead thread would leave the task's units to others
                    log.exception("unit thread failed", extra=self._extra)
                    outcome = _RETRY
                finally:
                    self.recorder.gate.leave()
                if outcome is _STOP:
                    return
                if outcome is _RETRY:
                    self._terminate.wait(state.wait_s)
                elif outcome is _IDLE:
                    counted = False  # waiting for units takes the thread out of the count
                    if not self._wait_for_units():
                        return
                    counted = True
        finally:
            if counted:
                with self._lock:
                    self._active -= 1
            if state.done:  # completions a failed call could not report
                self._report(lambda: self.recorder.claim_units(state.done, 0))
            self._close_event_loop()

    def _work(self, state: _Thread) -> object:
        """Claims and runs units while the task has some for this thread, reporting each
        batch's completions with the claim of the next. Returns why it stopped."""
        while True:
            stopping = self._terminate.is_set() or self.recorder.gate.closed
            if stopping and not state.done:
                return _STOP
            try:
                result = self.recorder.claim_units(
                    state.done, 0 if stopping else self._batch, state.last, self._only
                )
            except TaskNotRunning:
                state.done = []  # the task ended: no report of ours counts any more
                return _STOP
            except DtaskqError as exc:
                log.warning("claim failed: %s", exc, extra=self._extra)
                state.wait_s = _RETRY_S
                return _RETRY
            state.done = []
            for unit_id, error in result.rejected.items():
                log.info("completion dropped: %s", error, extra={**self._extra, "unit": unit_id})
            if stopping:
                return _STOP
            if not result.units:
                if result.retry_after_ms:
                    state.wait_s = result.retry_after_ms / 1000
                    return _RETRY
                return _IDLE
            for i, unit in enumerate(result.units):
                if self._terminate.is_set():
                    self._release_unstarted([str(u) for u in result.units[i:]])
                    break
                if self.task.unit_count is not None:
                    state.last = int(unit)
                if self._run_unit(str(unit), unit.token):
                    state.done.append((str(unit), unit.token))
                    self.recorder.finished(str(unit))

    def _release_unstarted(self, units: list[str]) -> None:
        """Units claimed ahead but never started go back at once, not after their leases."""
        self._report(lambda: self.recorder.release_all(units))

    def _wait_for_units(self) -> bool:
        """Waits, holding no slot, while sibling threads still run units, for units to come
        back. True when some did (the thread is counted active again); False once every
        thread is idle, or on termination."""
        with self._lock:
            self._active -= 1
        while not self._terminate.is_set():
            if self.recorder.wait_returned(_IDLE_POLL_S):
                with self._lock:
                    self._active += 1
                return True
            with self._lock:
                if not self._active:
                    return False  # every thread idle: nothing more can come back to us
        return False

    def _run_unit(self, unit: str, token: int) -> bool:
        """Runs one unit and reports its failure or abandonment; True when it completed (the
        thread reports that with its next claim)."""
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
            return False
        if error:
            log.warning("unit failed: %s", error, extra=extra)
            self._report(lambda: self.recorder.fail(unit, error, retry))
            return False
        if ctx.terminated:
            # Work that returns after being told to stop may be partial: leave the unit to
            # whoever takes it next rather than complete it.
            log.info("unit abandoned", extra=extra)
            self._report(lambda: self.recorder.release(unit))
            return False
        return True

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


_STOP, _RETRY, _IDLE = object(), object(), object()
"""Why a thread's run of units ended: stop for good, try again after a wait, or no unit is
left for it now."""


class _Thread:
    """What one runner thread carries from one claim to the next."""

    def __init__(self) -> None:
        self.done: list[tuple[str, int]] = []
        """Units it completed, to report with its next claim."""
        self.last: int | None = None
        """The range unit it ran last: its next claim continues after it."""
        self.wait_s = _RETRY_S
