"""The ACL rules of an application user who may not load the function library: the function
calls, the commands those functions run (Redis checks each against the caller's ACL), the
commands a worker sends itself, and the keys of one deployment."""

from __future__ import annotations

import re

WORKER_COMMANDS = ("xread", "xrevrange", "blpop", "blmove")
"""What clients and workers send besides function calls: a worker's reads of the event
streams and its wait on the job queues' wake markers, and ``Job.result``'s wait for a job's
end."""

CLIENT_COMMANDS = ("cluster|slots", "command")
"""What a cluster client of redis-py asks as it starts: the cluster's slots and the server's
command table. (It also names itself with CLIENT SETINFO on each new connection, and ignores a
refusal; that command is left out, since servers before Redis 7.2 reject a rule naming it.)"""

_NAMED_CALL = re.compile(r"""\bredis\.p?call\(\s*(['"])([\w|]+)\1""")
_ANY_CALL = re.compile(r"\bredis\.p?call\(")


def commands_called(source: str) -> list[str]:
    """The commands that the functions of a library ``source`` run, in lower case, sorted.

    Raises ``RuntimeError`` when a call names its command other than as a string literal:
    the list would miss it, and a user given these rules would be refused it."""
    named = [match.group(2).lower() for match in _NAMED_CALL.finditer(source)]
    if len(named) != len(_ANY_CALL.findall(source)):
        raise RuntimeError("a library function runs a command not named by a string literal")
    return sorted(set(named))


def rules(prefix: str, source: str) -> list[str]:
    """The ACL rules (``ACL SETUSER`` arguments) that let a client and a worker of the
    deployment with key ``prefix`` call the library ``source``, on a server or a cluster."""
    run = sorted({*commands_called(source), *WORKER_COMMANDS})
    # Every key of a deployment is "<prefix>:..." or carries the hash tag "{<prefix>:...}".
    keys = [f"~{prefix}:*", f"~{{{prefix}:*"]
    return [*keys, *(f"+{command}" for command in ("fcall", "fcall_ro", *run, *CLIENT_COMMANDS))]
