"""The function library, built from the files in ``lua/``: one atomic operation per file.

Every ``lua/<name>.lua`` becomes the server function ``dtaskq_<hash>_<name>`` of one Redis
function library, ``dtaskq_<hash>``, where ``<hash>`` is taken from the library's source. The
helpers in ``lua/include/`` are defined once per load of the library, not once per call, so a
call pays only for what it does. Two dtaskq versions on one server load two libraries whose
functions never replace each other's (docs/scripts.md).

An operation file starts with a header of comment lines: its purpose, one line per
``KEYS[i]`` and ``ARGV[i]``, ``Returns:``, ``Errors:``, and ``Flags: no-writes`` for
read-only operations (called with FCALL_RO, so replicas can serve them). The number of KEYS a
function takes is read from that header. An include file names the includes it uses with
``-- @requires NAME ...``; the library defines them first.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ._paths import lua_dir

_REQUIRES = re.compile(r"^-- @requires ((?:\w+ ?)+)$", re.MULTILINE)
_KEYS = re.compile(r"KEYS\[(\d+)\]")
_READ_ONLY = re.compile(r"^-- Flags: no-writes\b", re.MULTILINE)
_NAME = "dtaskq_{hash}"
_HASH_CHARS = 16


@dataclass(frozen=True)
class Function:
    """One operation of the library: its file stem, its name on the server, its KEYS count,
    and whether it only reads (FCALL_RO)."""

    name: str
    server_name: str
    num_keys: int
    read_only: bool
    header: str
    """The file's header comment: what the operation does, takes, returns and raises."""


@dataclass(frozen=True)
class Library:
    """The whole library: its name on the server, its source (FUNCTION LOAD), its functions."""

    name: str
    source: str
    functions: dict[str, Function]


def header(text: str) -> str:
    """The leading comment lines of a Lua file."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


def _include_order(include_dir: Path) -> list[tuple[str, str]]:
    """Every include file as (name, text), each after the includes it requires."""
    texts = {p.stem: p.read_text() for p in sorted(include_dir.glob("*.lua"))}
    ordered: list[tuple[str, str]] = []
    placing: set[str] = set()

    def place(name: str) -> None:
        if any(name == done for done, _ in ordered):
            return
        if name in placing:
            raise RuntimeError(f"lua/include/{name}.lua requires itself through others")
        if name not in texts:
            raise RuntimeError(f"no lua/include/{name}.lua")
        placing.add(name)
        for match in _REQUIRES.finditer(texts[name]):
            for needed in match.group(1).split():
                place(needed)
        ordered.append((name, texts[name]))

    for name in texts:
        place(name)
    return ordered


def build(directory: Path | None = None) -> Library:
    """The library of a Lua folder (default: the package's)."""
    root = directory or lua_dir()
    parts = [
        f"-- lua/include/{name}.lua\n{text}" for name, text in _include_order(root / "include")
    ]
    operations: list[tuple[str, int, bool, str]] = []
    for path in sorted(root.glob("*.lua")):
        text = path.read_text()
        head = header(text)
        key_numbers = [int(n) for n in _KEYS.findall(head)]
        read_only = bool(_READ_ONLY.search(head))
        operations.append((path.stem, max(key_numbers, default=0), read_only, head))
        # KEYS and ARGV are the function's arguments, so an operation's body reads as a script.
        parts.append(
            f"-- lua/{path.name}\nlocal function op_{path.stem}(KEYS, ARGV)\n{text}\nend\n"
        )
    body = "\n".join(parts)
    digest = hashlib.sha1(body.encode()).hexdigest()[:_HASH_CHARS]
    name = _NAME.format(hash=digest)
    functions: dict[str, Function] = {}
    registrations = []
    for stem, num_keys, read_only, head in operations:
        server_name = f"{name}_{stem}"
        functions[stem] = Function(stem, server_name, num_keys, read_only, head)
        flags = "{ 'no-writes' }" if read_only else "{}"
        registrations.append(
            f"redis.register_function{{ function_name = '{server_name}', flags = {flags},\n"
            f"  callback = function(keys, args) begin_call() return op_{stem}(keys, args) end }}"
        )
    source = f"#!lua name={name}\n{body}\n" + "\n".join(registrations) + "\n"
    return Library(name, source, functions)


LIBRARY = build()


def function(name: str) -> Function:
    """The operation ``lua/<name>.lua``; fails at import of the caller if the file is missing."""
    try:
        return LIBRARY.functions[name]
    except KeyError:
        raise RuntimeError(f"no operation lua/{name}.lua") from None
