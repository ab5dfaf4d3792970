"""``dtaskq library``: this version's Redis function library — load it, show it, check that a
server has it, and print the ACL of a user who calls it without loading it.

Clients load the library themselves when their user may run FUNCTION LOAD. Where the
application's user may not, an administrator runs ``dtaskq library load`` once per dtaskq
version, and the application's user needs only the rules ``dtaskq library acl`` prints
(docs/cli.md)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .. import validate
from .args import EXIT_UNREACHABLE, add_connect_timeout, add_url, checked, url_of

if TYPE_CHECKING:
    from ..client import Client
    from .args import Commands


def _load(args: argparse.Namespace) -> int:
    from ..client import Client
    from .connect import reach

    client, name = reach(url_of(args), args.connect_timeout, Client.load_library)
    client.close()
    print(name)
    return 0


def _show(args: argparse.Namespace) -> int:
    from ..scripts import LIBRARY

    if args.source:
        # Exactly what FUNCTION LOAD takes, so that it can be piped to redis-cli.
        sys.stdout.write(LIBRARY.source)
        return 0
    rows = [
        (fn.server_name, "FCALL_RO" if fn.read_only else "FCALL", str(fn.num_keys))
        for fn in LIBRARY.functions.values()
    ]
    width = max(len(name) for name, _, _ in rows)
    print(LIBRARY.name)
    for name, verb, num_keys in rows:
        print(f"  {name:<{width}}  {verb:<8}  {num_keys} key{'' if num_keys == '1' else 's'}")
    return 0


def loaded_on(client: Client) -> list[tuple[str, bool]]:
    """Whether each server of ``client`` has this version's library: the one server, or
    every primary of a cluster (a replica has what its primary has), as (address, loaded).
    Raises dtaskq's errors, as the client's own calls do."""
    import redis
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException

    from ..calls import translate
    from ..scripts import LIBRARY

    command = ("FUNCTION LIST", "LIBRARYNAME", LIBRARY.name)
    connection = client.redis
    try:
        if isinstance(connection, RedisCluster):
            # Asked of one node at a time: routed alone, FUNCTION LIST would merge the
            # primaries' answers into one. (redis-py leaves these two unannotated.)
            answers = []
            for node in connection.get_primaries():  # type: ignore[no-untyped-call]
                reply = connection.execute_command(*command, target_nodes=node)  # type: ignore[no-untyped-call]
                answers.append((node.name, _names(reply)))
            return answers
        where = connection.connection_pool.connection_kwargs
        address = where.get("path") or f"{where.get('host')}:{where.get('port')}"
        return [(address, _names(connection.function_list(library=LIBRARY.name)))]
    except (redis.RedisError, RedisClusterException) as exc:
        raise translate(exc, {}, "FUNCTION LIST") from exc


def _names(reply: Any) -> bool:
    """Whether a FUNCTION LIST reply lists this version's library."""
    from ..scripts import LIBRARY

    wanted = LIBRARY.name.encode()
    # RESP2 answers each library as a flat list of field, value; RESP3 as a map.
    for entry in reply or []:
        if not isinstance(entry, dict):
            entry = dict(zip(entry[::2], entry[1::2], strict=True))
        if entry.get(b"library_name") == wanted:
            return True
    return False


def _status(args: argparse.Namespace) -> int:
    from ..scripts import LIBRARY
    from .connect import reach

    client, answers = reach(url_of(args), args.connect_timeout, loaded_on)
    client.close()
    for address, loaded in answers:
        print(f"{LIBRARY.name} is {'loaded' if loaded else 'not loaded'} on {address}")
    return 0 if all(loaded for _, loaded in answers) else EXIT_UNREACHABLE


def _acl(args: argparse.Namespace) -> int:
    from ..scripts import LIBRARY
    from .acl import rules

    print(" ".join(rules(args.prefix, LIBRARY.source)))
    return 0


def add_parser(commands: Commands) -> None:
    """Adds ``library`` and its actions to the subcommands ``commands``."""
    library = commands.add_parser(
        "library",
        help="load, show or check this version's Redis function library",
        description="Every dtaskq version calls the functions of its own library, named "
        "dtaskq_<hash of its source>. Clients load it when their user may run FUNCTION LOAD; "
        "where it may not, an administrator runs 'dtaskq library load' once per version and "
        "the application needs only FCALL and FCALL_RO.",
    )
    actions = library.add_subparsers(dest="action", required=True, metavar="ACTION")

    load = actions.add_parser(
        "load",
        help="load the library on the server (every primary of a cluster)",
        description="Loads this version's function library on the server, on every primary "
        "of a cluster, replacing a library of the same name; prints its name. Needs a user "
        "who may run FUNCTION LOAD.",
    )
    add_url(load)
    add_connect_timeout(load, "the command")
    load.set_defaults(handler=_load, prog=load.prog)

    show = actions.add_parser(
        "show",
        help="print the library's name and functions, or its source",
        description="Prints the library's name and, per function, its name on the server, "
        "how it is called and the number of keys it takes; with --source, the Lua source "
        "that FUNCTION LOAD takes. Needs no server.",
    )
    show.add_argument(
        "--source",
        action="store_true",
        help="print the source for FUNCTION LOAD (redis-cli -x FUNCTION LOAD REPLACE < file)",
    )
    show.set_defaults(handler=_show, prog=show.prog)

    status = actions.add_parser(
        "status",
        help="say whether the server has the library (exit 0 if it has, 1 if not)",
        description="Says whether the server, or each primary of a cluster, has this "
        "version's function library; exits with status 0 when every one has it, 1 when one "
        "has not (or cannot be reached). Needs FUNCTION LIST.",
    )
    add_url(status)
    add_connect_timeout(status, "the command")
    status.set_defaults(handler=_status, prog=status.prog)

    acl = actions.add_parser(
        "acl",
        help="print the ACL rules of an application user who may not load the library",
        description="Prints, on one line, the ACL rules that let clients and workers of the "
        "deployment with key prefix --prefix work once the library is loaded: its keys, "
        "FCALL and FCALL_RO, the commands the library's functions run (the server checks "
        "them against the caller's rules too), the commands a worker sends itself, and "
        "CLUSTER SLOTS for cluster clients. For example: "
        "ACL SETUSER app on >password $(dtaskq library acl). Needs no server.",
    )
    acl.add_argument(
        "--prefix",
        default="dtq",
        type=checked(validate.namespace),
        help="key prefix of the deployment (dtq)",
    )
    acl.set_defaults(handler=_acl, prog=acl.prog)
