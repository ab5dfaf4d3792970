"""Job handlers: functions registered by name, which workers run and producers enqueue
(docs/runtime.md, "Jobs").

A :class:`Registry` holds handlers; ``@registry.handler("send_welcome", queue="emails")``
registers one and returns a :class:`Handler`, whose ``enqueue(client, *args, **kwargs)`` is
checked against the function's own signature, by type checkers (ParamSpec) and at run time.
Producers that do not import the handler's code enqueue by name with
:meth:`dtaskq.Client.enqueue`; a job never names code to import.
"""

from __future__ import annotations

import inspect
import threading
import typing
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, Unpack, overload

from . import validate
from .errors import DtaskqError, InvalidArgument
from .job_client import job_spec

if TYPE_CHECKING:
    from .job_aio import AsyncJobMethods
    from .job_client import JobMethods
    from .job_handle import AsyncJob, Job
    from .job_models import JobOptions

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"


class Retry(DtaskqError):
    """Raised by a handler: this attempt failed, try again after ``delay`` seconds (default:
    the job's backoff). It counts as an attempt; with none left the job goes to the
    dead-letter set."""

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(message)
        if delay is not None:
            validate.seconds(delay, "Retry delay")
        self.delay = delay


class Fail(DtaskqError):
    """Raised by a handler: the job failed for good, whatever attempts it has left; it goes to
    the dead-letter set with ``reason`` as its error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobContext:
    """What a handler that asks for it gets as its first argument: which job and attempt it
    runs, the job's deadline, ``heartbeat()``, and ``cancelled`` once the job was cancelled or
    its lease lost (its result will be turned away: stop early)."""

    def __init__(
        self,
        queue: str,
        job_id: str,
        attempt: int,
        max_attempts: int,
        deadline: datetime | None,
        heartbeat: Callable[[], bool],
    ) -> None:
        self.queue = queue
        self.job_id = job_id
        self.attempt = attempt
        """This attempt's number, from 1: the failed attempts and lost leases before it,
        plus one."""
        self.max_attempts = max_attempts
        self.deadline = deadline
        self._heartbeat = heartbeat
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, or its lease was lost to another worker."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Marks the attempt as cancelled (the worker does, on a heartbeat's answer)."""
        self._cancelled.set()

    def heartbeat(self) -> bool:
        """Renews the job's lease now; False when the job is no longer this attempt's."""
        return self._heartbeat()


def _takes_context(fn: Callable[..., Any]) -> bool:
    """True when the first parameter of ``fn`` is annotated :class:`JobContext`."""
    parameters = list(inspect.signature(fn).parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return False
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: read it as text
        hints = {}
    annotation = hints.get(parameters[0].name, parameters[0].annotation)
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1] == "JobContext"
    return annotation is JobContext


def _job_signature(fn: Callable[..., Any], takes_context: bool) -> inspect.Signature:
    """The signature a job's arguments must fit: the function's, without its context."""
    signature = inspect.signature(fn)
    if takes_context:
        parameters = list(signature.parameters.values())[1:]
        signature = signature.replace(parameters=parameters)
    return signature


def _plain_arity(signature: inspect.Signature) -> int | None:
    """The number of parameters of a signature whose parameters are all positional without
    defaults (then a call with that many positional arguments fits it); None otherwise."""
    plain = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY
    for parameter in signature.parameters.values():
        if parameter.kind not in plain or parameter.default is not inspect.Parameter.empty:
            return None
    return len(signature.parameters)


@dataclass(frozen=True)
class Handler(Generic[P, R]):
    """A registered handler: call it like the function, or enqueue a call of it."""

    name: str
    queue: str
    fn: Callable[..., Any]
    takes_context: bool
    is_async: bool
    options: dict[str, Any]

    def __post_init__(self) -> None:
        # Checked for every job a worker runs: worked out once.
        signature = _job_signature(self.fn, self.takes_context)
        object.__setattr__(self, "_signature", signature)
        object.__setattr__(self, "_arity", _plain_arity(signature))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def check(self, args: Any, kwargs: Any) -> None:
        """``InvalidArgument`` unless the arguments fit the function's signature (after the
        context, if it takes one)."""
        if not kwargs and len(args) == self.__dict__["_arity"]:
            return
        try:
            self.__dict__["_signature"].bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArgument(f"bad arguments for handler {self.name}: {exc}") from None

    def using(self, **options: Unpack[JobOptions]) -> Handler[P, R]:
        """This handler with other default job options (priority, delay, ...)."""
        job_spec(self.name, (), None, dict(options))  # checks the option names now
        return Handler(
            self.name,
            self.queue,
            self.fn,
            self.takes_context,
            self.is_async,
            {**self.options, **options},
        )

    @overload
    def enqueue(self, client: JobMethods, *args: P.args, **kwargs: P.kwargs) -> Job: ...

    @overload
    def enqueue(
        self, client: AsyncJobMethods, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, AsyncJob]: ...

    def enqueue(self, client: Any, *args: Any, **kwargs: Any) -> Any:
        """Enqueues a call of this handler on its queue, with its default options: returns the
        :class:`~dtaskq.Job` (with an :class:`~dtaskq.AsyncClient`, a coroutine of an
        :class:`~dtaskq.AsyncJob`). The arguments are checked against the function."""
        self.check(args, kwargs)
        return client.enqueue(self.queue, self.name, args, kwargs, **self.options)


class Registry:
    """Handlers by name: what a worker serves (``dtaskq worker --handlers module:registry``)
    and what producers may enqueue by name. ``queue`` is the queue of the handlers that do not
    name their own."""

    def __init__(self, queue: str = DEFAULT_QUEUE) -> None:
        self.queue = validate.namespace(queue)
        self._handlers: dict[str, Handler[Any, Any]] = {}

    @overload
    def handler(
        self, name: str | None = None, *, queue: str | None = None, **options: Unpack[JobOptions]
    ) -> _Decorator: ...

    @overload
    def handler(self, name: Callable[P, R]) -> Handler[P, R]: ...

    def handler(self, name: Any = None, *, queue: str | None = None, **options: Any) -> Any:
        """Registers a function (or ``async def``) under ``name`` (default: its module and
        name, ``pkg.mod.fn``), to be enqueued on ``queue`` with default ``options``. A
        function whose first parameter is annotated :class:`JobContext` gets the job's
        context there; the job's arguments fill the rest. Use as ``@registry.handler`` or
        ``@registry.handler("name", queue="emails", max_attempts=3)``."""
        if callable(name):
            return self._register(name, None, None, {})
        return _Decorator(self, name, queue, options)

    def _register(
        self,
        fn: Callable[..., Any],
        name: str | None,
        queue: str | None,
        options: dict[str, Any],
    ) -> Handler[Any, Any]:
        name = validate.ident(name or f"{fn.__module__}.{fn.__qualname__}", "handler name")
        job_spec(name, (), None, dict(options))
        handler: Handler[Any, Any] = Handler(
            name,
            validate.namespace(queue or self.queue),
            fn,
            _takes_context(fn),
            inspect.iscoroutinefunction(fn),
            options,
        )
        self.add(handler)
        return handler

    def add(self, handler: Handler[Any, Any]) -> None:
        """Adds a handler (registered here, or elsewhere: ``dtaskq worker`` merges a module's);
        another function of the same name is ``InvalidArgument``."""
        known = self._handlers.get(handler.name)
        if known is not None and known.fn is not handler.fn:
            raise InvalidArgument(f"a handler named {handler.name} is registered already")
        self._handlers[handler.name] = handler

    def get(self, name: str) -> Handler[Any, Any] | None:
        """The handler registered as ``name``, or None."""
        return self._handlers.get(name)

    def __iter__(self) -> Iterator[Handler[Any, Any]]:
        return iter(list(self._handlers.values()))

    def __len__(self) -> int:
        return len(self._handlers)

    def queues(self) -> list[str]:
        """The queues the handlers are enqueued on, in registration order."""
        return list(dict.fromkeys(h.queue for h in self._handlers.values()))


class _Decorator:
    """What ``registry.handler(name, ...)`` returns: applied to a function, registers it."""

    def __init__(
        self, registry: Registry, name: str | None, queue: str | None, options: dict[str, Any]
    ) -> None:
        self._registry = registry
        self._name = name
        self._queue = queue
        self._options = options

    @overload
    def __call__(self, fn: Callable[Concatenate[JobContext, P], R]) -> Handler[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Handler[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> Handler[Any, Any]:
        return self._registry._register(fn, self._name, self._queue, self._options)
