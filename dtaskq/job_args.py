"""Client-side checks and encoding of jobs: a :class:`JobSpec` becomes the ARGV record of
``lua/enqueue_jobs.lua``, or an ``InvalidArgument`` before any Redis call."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import msgpack

from . import validate
from .calls import Arg, request_id
from .errors import InvalidArgument
from .job_models import DEFAULT_BACKOFF, DEFAULT_RESULT_TTL, Backoff, Duration, JobSpec
from .keys import QueuePartition

MAX_PRIORITY = 1000
MAX_ATTEMPTS = 1000
MAX_KEY_BYTES = validate.MAX_ID_BYTES - 1
"""An idempotency key ``k`` names its job ``=k``, which must be a valid id."""
MAX_CHECKED_HANDLERS = 1024
_CHECKED_HANDLERS: set[str] = set()
"""Handler names found valid: a producer enqueues few names many times."""
DEFAULT_RESULT_TTL_MS = round(DEFAULT_RESULT_TTL.total_seconds() * 1000)


def duration_ms(value: Any, what: str, minimum: int = 0) -> int:
    """Milliseconds of a duration given in seconds (int or float) or as a ``timedelta``."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidArgument(f"{what} must be seconds or a timedelta, got {value!r}")
    if not math.isfinite(seconds) or seconds * 1000 < minimum or seconds * 1000 > validate.MAX_INT:
        raise InvalidArgument(f"{what} must be at least {minimum / 1000:g} s, got {value!r}")
    return max(minimum, round(seconds * 1000))


def epoch_ms(value: Any, what: str) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidArgument(f"{what} must be a timezone-aware datetime, got {value!r}")
    ms = round(value.timestamp() * 1000)
    if ms < 0:
        raise InvalidArgument(f"{what} must be after 1970, got {value!r}")
    return ms


def backoff(value: Any) -> Backoff:
    """A :class:`Backoff`, or one whose first wait is the duration given."""
    if not isinstance(value, Backoff):
        first = duration_ms(value, "backoff", 1) / 1000
        return Backoff(first=first, maximum=max(first, Backoff.maximum))
    first = duration_ms(value.first, "backoff first", 1)
    maximum = duration_ms(value.maximum, "backoff maximum", first)
    # Rebuilt from the checked ms: a Backoff of timedeltas would not encode (nor compute its
    # delays on a worker).
    return Backoff(first / 1000, maximum / 1000)


def encode_backoff(value: Backoff) -> str:
    """``"<first ms>,<max ms>"``, or "" for the default."""
    if value == DEFAULT_BACKOFF:
        return ""
    return f"{round(value.first * 1000)},{round(value.maximum * 1000)}"


def decode_backoff(value: bytes) -> Backoff:
    """The :class:`Backoff` that :func:`encode_backoff` stored."""
    if not value:
        return DEFAULT_BACKOFF
    first, maximum = value.split(b",")
    return Backoff(int(first) / 1000, int(maximum) / 1000)


def encode_arguments(args: Any, kwargs: Any, handler: str) -> bytes:
    """msgpack of ``[args, kwargs]``; never pickle."""
    if not isinstance(args, (tuple, list)):
        raise InvalidArgument(f"args of a {handler} job must be a tuple or list, got {args!r}")
    if kwargs is None:
        kwargs = {}
    elif not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidArgument(f"kwargs of a {handler} job must be a dict with str keys")
    return pack([list(args), kwargs], f"the arguments of a {handler} job")


def pack(value: Any, what: str) -> bytes:
    """msgpack of ``value``; ``InvalidArgument`` names what could not be encoded."""
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument(f"{what} cannot be encoded with msgpack: {exc}") from exc


def job_id(key: str | None) -> str:
    """The id of a new job: ``=<key>`` for an idempotency key, else a fresh unique id."""
    if key is None:
        return request_id()
    if not validate.is_ident(key) or validate.utf8_size(key) > MAX_KEY_BYTES:
        raise InvalidArgument(
            f"idempotency_key must be 1-{MAX_KEY_BYTES} bytes without braces, whitespace or "
            f"control characters, got {key!r}"
        )
    return "=" + key


def record(spec: Any) -> list[Arg]:
    """The 12 ARGV values of one job (``lua/enqueue_jobs.lua``), its id first."""
    if not isinstance(spec, JobSpec):
        raise InvalidArgument(f"enqueue_many takes JobSpec values, got {spec!r}")
    handler = spec.handler
    if type(handler) is not str or handler not in _CHECKED_HANDLERS:
        validate.ident(handler, "handler")
        if len(_CHECKED_HANDLERS) >= MAX_CHECKED_HANDLERS:
            _CHECKED_HANDLERS.clear()
        _CHECKED_HANDLERS.add(handler)
    priority = validate.integer(spec.priority, "priority", -MAX_PRIORITY, MAX_PRIORITY)
    if spec.delay is not None and spec.run_at is not None:
        raise InvalidArgument("a job takes delay or run_at, not both")
    if spec.on_deadline not in ("fail", "drop"):
        raise InvalidArgument(f"on_deadline must be 'fail' or 'drop', got {spec.on_deadline!r}")
    # The defaults are shared objects: most jobs skip their checks.
    ttl = (
        DEFAULT_RESULT_TTL_MS
        if spec.result_ttl is DEFAULT_RESULT_TTL
        else duration_ms(spec.result_ttl, "result_ttl")
    )
    backoff_text = "" if spec.backoff is DEFAULT_BACKOFF else encode_backoff(backoff(spec.backoff))
    return [
        job_id(spec.idempotency_key),
        handler,
        encode_arguments(spec.args, spec.kwargs, handler),
        priority,
        _optional(spec.delay, duration_ms, "delay"),
        _optional(spec.run_at, epoch_ms, "run_at"),
        _optional(spec.deadline, epoch_ms, "deadline"),
        "1" if spec.on_deadline == "drop" else "0",
        _optional(spec.timeout, lambda v, w: duration_ms(v, w, 1), "timeout"),
        validate.integer(spec.max_attempts, "max_attempts", 1, MAX_ATTEMPTS),
        backoff_text,
        ttl,
    ]


def _optional(value: Duration | datetime | None, convert: Any, what: str) -> str | int:
    return "" if value is None else int(convert(value, what))


def specs(value: Any) -> list[JobSpec]:
    """The specs of ``enqueue_many``, all checked before any is sent."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgument(f"enqueue_many takes a list of JobSpec, got {value!r}")
    return list(value)


def job_ids(value: Any) -> list[str] | None:
    """The job ids of ``requeue_dead`` and ``purge_dead``; None for every dead job. A single
    id is refused rather than read as a list of one-letter ids."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgument(f"job_ids must be a list of job ids, got {value!r}")
    return [validate.ident(i, "job id") for i in value]


def partition(value: Any) -> QueuePartition:
    """A :class:`QueuePartition` as ``Client.queue_partitions`` answers them."""
    if not isinstance(value, QueuePartition):
        raise InvalidArgument(f"expected a QueuePartition, got {value!r}")
    validate.namespace(value.prefix)
    validate.namespace(value.queue)
    validate.integer(value.index, "partition", 0, 1023)
    return value


def claims(value: Any) -> list[tuple[str, int]]:
    """``(job id, token)`` pairs of ``heartbeat_jobs`` and ``release_jobs``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgument("claims must be a list of (job id, token) tuples")
    pairs = list(value)
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidArgument(f"claims are (job id, token) tuples, got {pair!r}")
        validate.ident(pair[0], "job id")
        validate.integer(pair[1], "token", 1)
    return pairs
