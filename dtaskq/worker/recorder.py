"""The recorder handed to providers: claims and reports for one task, with progress
throttled (``docs/runtime.md``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

from ..claims import backing_off
from ..client import Client
from ..errors import InvalidArgument, LeaseLost, UnitWrongNode
from ..models import DONE, ClaimedUnit, ClaimResult, Done, Task
from .gate import Gate
from .heartbeats import renew
from .leases import Claim, Claims

DEFAULT_INTERVAL_S = 3.0


class Recorder:
    """Claims units of one task version for this node and reports on them.

    Progress of a unit is forwarded at most once per ``interval`` seconds of ``clock``; a
    report inside the interval is dropped (stored progress is monotonic, so the next one
    carries it). Claims, completions and failures are always forwarded. A unit's throttle
    entry goes at its completion or failure, and a forward that raised leaves none, so the next
    report is forwarded at once. Every claim is renewed by the worker's heartbeats until its
    unit is reported terminal.

    Every report carries the token its unit was claimed under, so that the server turns away a
    report whose lease is over rather than take it for a claim; reporting on a unit that was
    not claimed here is an ``InvalidArgument``. Once a unit's lease is found lost (by a
    heartbeat or a progress report), :meth:`is_lost` says so and progress is no longer sent.
    """

    def __init__(
        self,
        client: Client,
        task: Task,
        node: str,
        claims: Claims,
        gate: Gate,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.task = task
        self.ref = task.ref
        self.node = node
        self.gate = gate
        self._claims = claims
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: dict[str, float] = {}
        self._tokens: dict[str, int] = {}
        self._returned = threading.Event()

    @property
    def stopping(self) -> bool:
        """True once the worker stopped claiming; start no new unit."""
        return self.gate.closed

    def claim(self, unit: str) -> int | None:
        """Claims a named unit (a progress report of 0.0) and returns its token; a unit this
        node holds already gives its current token. None when the unit is terminal or another
        node holds it. Raises ``UnitNotReady`` while it backs off, ``TaskNotRunning``."""
        try:
            token = self.client.update_progress(self.ref, self.node, unit, 0.0)
        except UnitWrongNode:
            return None
        if token is not None:
            self._hold(unit, token)
        return token

    def claim_next(self, last: int | None = None) -> ClaimedUnit | Done:
        """Claims a range unit: ``last + 1`` while it is free, else as ``claim_first``."""
        claimed = self.claim_range(last, 1)
        return claimed[0] if isinstance(claimed, list) else claimed

    def claim_range(self, last: int | None, max_units: int) -> list[ClaimedUnit] | Done:
        """Claims up to ``max_units`` range units in one call, as ``Client.claim`` does:
        the first after ``last`` (or as ``claim_first`` when None), each next one after the one
        before it.

        After :meth:`units_returned`, claims start as ``claim_first`` (which hands out units
        waiting to be claimed again before anything else) until one yields only units claimed
        for the first time: returned units then run at once rather than when a span ends."""
        result = self.claim_units((), max_units, last)
        if result.units:
            return [unit for unit in result.units if isinstance(unit, ClaimedUnit)]
        if result.retry_after_ms:
            raise backing_off(self.ref, self.node, result.retry_after_ms)
        return DONE

    def claim_units(
        self,
        done: Sequence[tuple[str, int]],
        max_units: int,
        last: int | None = None,
        units: Iterable[str] | None = None,
    ) -> ClaimResult:
        """Completes the units in ``done`` (``(unit, token)`` pairs claimed here) and claims up
        to ``max_units`` more, in one call: range units as :meth:`claim_range` does (after
        ``last``), named ones with ``Client.claim_any`` (only ``units`` when given). Completed
        units are forgotten, whether their completion took effect or was turned away (their
        lease was lost: another claimer has them); the rejections are in the result."""
        if self.task.unit_count is None:
            self._returned.clear()  # what comes back from now on wakes idle threads again
            result = self.client.claim_any(self.ref, self.node, max_units, units, done)
        else:
            if self._returned.is_set():
                last = None
            result = self.client.complete_and_claim(self.ref, self.node, done, max_units, last)
            if last is None and (not result.units or result.units[0].token == 1):
                self._returned.clear()
        for unit, _ in done:
            self._forget(unit)
        for claimed in result.units:
            self._hold(str(claimed), claimed.token)
        return result

    def wait_returned(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for :meth:`units_returned`."""
        return self._returned.wait(timeout)

    def finished(self, unit: str) -> None:
        """Notes that ``unit`` is done here and waits to be reported with the next claim: a
        worker that stops meanwhile completes it instead of giving it back."""
        self._claims.finish(self.ref, unit)

    def units_returned(self) -> None:
        """Tells the recorder that units of its task went back to waiting (an expired lease,
        a retryable failure, a release); the scheduler calls it on the task's events."""
        self._returned.set()

    def progress(self, unit: str | int, value: float) -> bool:
        """Forwards progress in [0, 1] of a unit claimed here, unless its progress was forwarded
        less than the throttle interval ago. True when forwarded; False when dropped, when
        the unit is terminal, or when its lease is lost: then the unit is marked lost
        (:meth:`is_lost`) rather than LeaseLost raised."""
        key = str(unit)
        if self.is_lost(key):
            return False
        token = self._token(key)
        now = self._clock()
        with self._lock:
            last = self._sent.get(key)
            if value != 0.0 and last is not None and now - last < self._interval:
                return False
            self._sent.pop(key, None)
        try:
            stored = self.client.update_progress(self.ref, self.node, key, value, token)
        except (LeaseLost, UnitWrongNode):
            self._claims.lose(self.ref, key)
            return False
        if stored is None:
            return False
        with self._lock:
            self._sent[key] = now
        return True

    def complete(self, unit: str | int) -> None:
        """Completes a unit under the token of its claim; raises ``LeaseLost`` (or
        ``UnitWrongNode``) when the lease is over."""
        key = str(unit)
        token = self._token(key)
        try:
            self.client.complete_unit(self.ref, self.node, key, token)
        finally:
            self._forget(key)

    def fail(self, unit: str | int, error: str, retryable: bool = False) -> bool:
        """Fails a unit under the token of its claim; True when it was put back for a retry.
        Raises ``LeaseLost`` (or ``UnitWrongNode``) when the lease is over."""
        key = str(unit)
        token = self._token(key)
        try:
            return self.client.fail_unit(self.ref, self.node, key, error, token, retryable)
        finally:
            self._forget(key)

    def release(self, unit: str | int) -> bool:
        """Gives a claimed unit back without reporting on it, so that another claimer takes it
        at once; True when it was still held. A unit whose lease was lost is only forgotten."""
        return self.release_all([unit]) == 1

    def release_all(self, units: Sequence[str | int]) -> int:
        """Gives claimed units back in one call, as :meth:`release`; how many were held."""
        keys = [str(u) for u in units]
        with self._lock:
            tokens = {k: self._tokens[k] for k in keys if k in self._tokens}
        held = [(k, t) for k, t in tokens.items() if not self.is_lost(k)]
        try:
            if not held:
                return 0
            answers = self.client.release(self.node, [(self.ref, k, t) for k, t in held])
            return sum(answers)
        finally:
            for key in keys:
                self._forget(key)

    def heartbeat(self) -> None:
        """Renews this task's claims now (the worker also does so on its own thread)."""
        renew(self.client, self.node, self._claims, self._claims.snapshot(self.ref))

    def is_lost(self, unit: str | int) -> bool:
        """True once a heartbeat or a progress report found that this node no longer holds
        ``unit``: reports on it no longer count."""
        return self._claims.is_lost(self.ref, str(unit))

    def _token(self, unit: str) -> int:
        """The token ``unit`` was claimed under here."""
        with self._lock:
            token = self._tokens.get(unit)
        if token is None:
            raise InvalidArgument(
                f"unit {unit} of task {self.ref.task_id} is not claimed by this recorder",
                namespace=self.ref.namespace,
                task_id=self.ref.task_id,
                version=self.ref.version,
                unit=unit,
                node=self.node,
            )
        return token

    def _hold(self, unit: str, token: int) -> None:
        with self._lock:
            self._tokens[unit] = token
        self._claims.add(Claim(self.ref, unit, token, self.task.lease_ms))

    def _forget(self, unit: str) -> None:
        with self._lock:
            self._sent.pop(unit, None)
            self._tokens.pop(unit, None)
        self._claims.remove(self.ref, unit)
