"""Client-side argument checks: every public call runs them before any Redis call."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, TypeGuard

from .errors import InvalidArgument
from .models import TaskRef, UnitSpec

MAX_ID_BYTES = 200
MAX_UNITS = 100_000
MAX_CONFLICT_KEYS = 1_000
MAX_ERROR_BYTES = 65_536
MAX_INT = 2**53

_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Braces would break hash tags; whitespace and control characters are separators in storage.
_BAD_ID_CHAR = re.compile(r"[{}\s\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def namespace(value: Any) -> str:
    """A namespace: 1-64 characters of ``[A-Za-z0-9_.-]``."""
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value):
        raise InvalidArgument(f"namespace must be 1-64 characters of [A-Za-z0-9_.-], got {value!r}")
    return value


def utf8_size(value: str) -> int:
    """The size of ``value`` in UTF-8; -1 when it cannot be encoded (a lone surrogate)."""
    if value.isascii():
        return len(value)
    try:
        return len(value.encode())
    except UnicodeEncodeError:
        return -1


def is_ident(value: Any) -> TypeGuard[str]:
    """True for a valid id: 1-200 bytes of UTF-8 without braces, whitespace or controls."""
    return (
        isinstance(value, str)
        and 0 < utf8_size(value) <= MAX_ID_BYTES
        and _BAD_ID_CHAR.search(value) is None
    )


def ident(value: Any, what: str) -> str:
    """A task, unit, node id or conflict key: 1-200 bytes, no braces, whitespace or controls."""
    if not is_ident(value):
        raise InvalidArgument(
            f"{what} must be 1-{MAX_ID_BYTES} bytes without braces, whitespace or control "
            f"characters, got {value!r}"
        )
    return value


def unit_id(value: Any) -> str:
    """A unit id as stored: a named unit's id, or a range unit's number as decimal text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(integer(value, "range unit", 0, MAX_INT - 1)))
    return ident(value, "unit id")


def group(value: Any) -> str:
    """A unit group: at most 200 bytes, no control characters; "" is the default group."""
    if (
        not isinstance(value, str)
        or not 0 <= utf8_size(value) <= MAX_ID_BYTES
        or _CONTROL.search(value)
    ):
        raise InvalidArgument(f"group must be at most {MAX_ID_BYTES} bytes of text, got {value!r}")
    return value


def integer(value: Any, what: str, minimum: int, maximum: int = MAX_INT) -> int:
    """An int (not a bool) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidArgument(f"{what} must be an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def seconds(value: Any, what: str, minimum: float = 0.0) -> float:
    """A finite number of seconds (int or float, not a bool), at least ``minimum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < minimum
    ):
        raise InvalidArgument(f"{what} must be seconds >= {minimum:g}, got {value!r}")
    return float(value)


def flag(value: Any, what: str) -> bool:
    """A bool."""
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} must be a bool, got {value!r}")
    return value


def payload(value: Any, limit: int) -> bytes:
    """Task payload: bytes of at most ``limit`` bytes."""
    if not isinstance(value, bytes):
        raise InvalidArgument(f"payload must be bytes, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidArgument(f"payload is {len(value)} bytes, the limit is {limit}")
    return value


def progress(value: Any) -> float:
    """Progress: a finite number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"progress must be a number, got {value!r}")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"progress must be a finite number in [0, 1], got {value!r}")
    return float(value)


def token(value: Any) -> int | None:
    """A fencing token, or None to check the node only."""
    return None if value is None else integer(value, "token", 0)


def error_text(value: Any) -> str:
    """An error message: text of at most 64 KiB."""
    if not isinstance(value, str) or not 0 <= utf8_size(value) <= MAX_ERROR_BYTES:
        raise InvalidArgument(f"error must be UTF-8 text of at most {MAX_ERROR_BYTES} bytes")
    return value


def lease_expiry(value: Any) -> str:
    """``on_lease_expiry``: "reassign" or "sticky"."""
    if value not in ("reassign", "sticky"):
        raise InvalidArgument(f'on_lease_expiry must be "reassign" or "sticky", got {value!r}')
    return str(value)


def ref(value: Any) -> TaskRef:
    """A :class:`TaskRef` with valid parts."""
    if not isinstance(value, TaskRef):
        raise InvalidArgument(f"expected a TaskRef, got {type(value).__name__}")
    namespace(value.namespace)
    ident(value.task_id, "task id")
    integer(value.version, "version", 1)
    return value


_checked: set[tuple[TaskRef, str]] = set()
_CHECKED_LIMIT = 4096


def ref_and_node(task: Any, node: Any) -> None:
    """A :class:`TaskRef` and a node id, checked once per pair: a worker reports on the same
    task as the same node thousands of times."""
    plain = (
        type(task) is TaskRef
        and type(task.namespace) is str
        and type(task.task_id) is str
        and type(task.version) is int
        and type(node) is str
    )
    if plain and (task, node) in _checked:
        return
    ref(task)
    ident(node, "node id")
    if len(_checked) >= _CHECKED_LIMIT:
        _checked.clear()
    _checked.add((task, node))


def units(value: Any) -> list[tuple[str, str]]:
    """Named units (str ids or :class:`UnitSpec`): 1-100 000 distinct ids, as (id, group)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgument("units must be a list of unit ids or UnitSpec")
    pairs = [(u.id, group(u.group)) if isinstance(u, UnitSpec) else (u, "") for u in value]
    if not 1 <= len(pairs) <= MAX_UNITS:
        raise InvalidArgument(f"a task needs 1 to {MAX_UNITS} units, got {len(pairs)}")
    seen: set[str] = set()
    for unit_id, _ in pairs:
        if not is_ident(unit_id):
            ident(unit_id, "unit id")
        if unit_id in seen:
            raise InvalidArgument(f"duplicate unit id {unit_id!r}")
        seen.add(unit_id)
    return pairs


def conflict_keys(value: Any) -> list[str]:
    """Conflict keys: at most 1 000 ids."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidArgument("conflict_keys must be a list of keys")
    keys = [ident(k, "conflict key") for k in value]
    if len(keys) > MAX_CONFLICT_KEYS:
        raise InvalidArgument(f"at most {MAX_CONFLICT_KEYS} conflict keys")
    return keys
