"""The claim operations as I/O-free steps: a named unit by id, range units by span splitting
(docs/ranges.md), any pending named unit, and the calls that complete units and claim the
next ones in the same round trip."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import validate
from .calls import Router, Steps, claimer_request_id
from .errors import DtaskqError, InvalidArgument, UnitNotReady, from_script_error
from .models import DONE, ClaimedName, ClaimedUnit, ClaimResult, Done, TaskRef
from .ops import error_context, task_call
from .scripts import function

MAX_CLAIM_BATCH = 1_000
MAX_FILTER = 100_000

_CLAIM = function("claim_unit")
_CLAIM_RANGE = function("claim_range")
_CLAIM_ANY = function("claim_any")

Completions = Sequence[tuple[str | int, int]]
"""Units to complete before claiming, as ``(unit id, token)`` pairs."""


def claim_unit(router: Router, ref: TaskRef, node: str, unit: str | int) -> Steps[int]:
    """Claims a unit for ``node``; returns the token (rule 6)."""
    validate.ref_and_node(ref, node)
    unit = validate.unit_id(unit)
    token = yield from task_call(router, ref, _CLAIM, [unit, node], unit=unit, node=node)
    return int(token)


def _completion_args(done: Completions) -> list[Any]:
    if isinstance(done, tuple) and not done:
        return [0]
    if isinstance(done, (str, bytes)) or not isinstance(done, Sequence):
        raise InvalidArgument("units to complete must be a list of (unit id, token) pairs")
    if len(done) > MAX_CLAIM_BATCH:
        raise InvalidArgument(f"at most {MAX_CLAIM_BATCH} units can be completed in one call")
    args: list[Any] = [len(done)]
    for pair in done:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidArgument("units to complete are (unit id, token) pairs")
        args += (validate.unit_id(pair[0]), validate.integer(pair[1], "token", 0))
    return args


def _result(
    ref: TaskRef,
    node: str,
    done: Completions,
    max_units: int,
    reply: list[Any],
    units: list[Any],
) -> ClaimResult:
    rejected: dict[str, Exception] = {}
    for (unit, _), code in zip(done, reply[1], strict=True):
        if code:
            unit_id = str(unit)
            error = from_script_error(
                f"DTQ_{code.decode()} the report on unit {unit_id} was turned away",
                error_context(ref, node=node, unit=unit_id),
            )
            rejected[unit_id] = error if error is not None else DtaskqError(code.decode())
    wait = int(reply[0])
    # A call that claimed nothing because it asked for nothing says nothing of what is left.
    finished = not units and not wait and max_units > 0
    return ClaimResult(units, rejected, done=finished, retry_after_ms=wait)


def _claim_range_reply(
    router: Router, ref: TaskRef, node: str, max_units: int, last: int | None, done: Completions
) -> Steps[Any]:
    validate.ref_and_node(ref, node)
    validate.integer(max_units, "max_units", 0 if done else 1, MAX_CLAIM_BATCH)
    if last is not None:
        validate.integer(last, "last", 0, validate.MAX_INT - 1)
    args = [
        node,
        max_units,
        "" if last is None else int(last),
        claimer_request_id(router.claimer()),
        *_completion_args(done),
    ]
    return (yield from task_call(router, ref, _CLAIM_RANGE, args, node=node))


def _runs(reply: list[Any]) -> list[ClaimedUnit]:
    runs = zip(reply[2::3], reply[3::3], reply[4::3], strict=True)
    return [ClaimedUnit(first + i, token) for first, count, token in runs for i in range(count)]


def claim_range(
    router: Router,
    ref: TaskRef,
    node: str,
    max_units: int,
    last: int | None,
    done: Completions = (),
) -> Steps[ClaimResult]:
    """Completes ``done``, then hands up to ``max_units`` range units to ``node``, each as
    ``claim_next`` would after the one before it (``claim_first`` for the first when ``last``
    is None)."""
    reply = yield from _claim_range_reply(router, ref, node, max_units, last, done)
    return _result(ref, node, done, max_units, reply, _runs(reply))


def claim_batch(
    router: Router, ref: TaskRef, node: str, max_units: int, last: int | None
) -> Steps[list[ClaimedUnit] | Done]:
    """Up to ``max_units`` range units, or DONE when none is left; raises ``UnitNotReady``
    when only units backing off after a retryable failure are left."""
    reply = yield from _claim_range_reply(router, ref, node, max_units, last, ())
    if len(reply) > 2:
        return _runs(reply)
    if reply[0]:
        raise backing_off(ref, node, int(reply[0]))
    return DONE


def backing_off(ref: TaskRef, node: str, wait_ms: int) -> UnitNotReady:
    """The error of a range claim that found only units backing off after a retryable
    failure, the first ready in ``wait_ms``."""
    error = UnitNotReady(
        f"every unit left is backing off; the first is ready in {wait_ms} ms",
        **error_context(ref, node=node),
    )
    error.retry_after_ms = wait_ms
    return error


def claim_one(
    router: Router, ref: TaskRef, node: str, last: int | None
) -> Steps[ClaimedUnit | Done]:
    """``claim_first`` (``last`` None) or ``claim_next``: one unit of :func:`claim_batch`."""
    claimed = yield from claim_batch(router, ref, node, 1, last)
    return claimed if isinstance(claimed, Done) else claimed[0]


def claim_any(
    router: Router,
    ref: TaskRef,
    node: str,
    max_units: int,
    units: Iterable[str] | None,
    done: Completions = (),
) -> Steps[ClaimResult]:
    """Completes ``done``, then hands up to ``max_units`` pending named units to ``node``: kept
    for it first, then returned ones, then fresh ones in task order; only those in ``units``
    when given."""
    validate.ref_and_node(ref, node)
    validate.integer(max_units, "max_units", 0 if done else 1, MAX_CLAIM_BATCH)
    wanted: list[str] = []
    if units is not None:
        if isinstance(units, (str, bytes)):
            raise InvalidArgument("units must be a collection of unit ids")
        wanted = [validate.ident(u, "unit id") for u in units]
        if not 1 <= len(wanted) <= MAX_FILTER:
            raise InvalidArgument(f"a unit filter names 1 to {MAX_FILTER} units")
    args = [
        node,
        max_units,
        claimer_request_id(router.claimer()),
        *_completion_args(done),
        len(wanted),
        *wanted,
    ]
    reply = yield from task_call(router, ref, _CLAIM_ANY, args, node=node)
    claimed = [
        ClaimedName(unit.decode("utf-8", "surrogateescape"), token)
        for unit, token in zip(reply[2::2], reply[3::2], strict=True)
    ]
    return _result(ref, node, done, max_units, reply, claimed)
