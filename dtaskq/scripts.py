"""The script registry, built from the files in ``lua/``: one atomic operation per file.

A line ``-- @include NAME`` splices ``lua/include/NAME.lua`` in its place (includes may
include others). The number of KEYS a script takes is read from its header (its highest
``KEYS[i]``) and checked on every call, so the Python side cannot drift from the files.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ._paths import lua_dir

_INCLUDE = re.compile(r"^-- @include (\w+)$", re.MULTILINE)
_KEYS = re.compile(r"KEYS\[(\d+)\]")


@dataclass(frozen=True)
class Script:
    """One Lua script: its name, full source (includes spliced in), SHA1 and KEYS count."""

    name: str
    source: str
    sha: str
    num_keys: int


def _header(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


def _splice(text: str, include_dir: Path, depth: int = 0) -> str:
    if depth > 4:
        raise RuntimeError("lua includes nest more than 4 deep")
    return _INCLUDE.sub(
        lambda m: _splice((include_dir / f"{m.group(1)}.lua").read_text(), include_dir, depth + 1),
        text,
    )


def _load(path: Path, include_dir: Path) -> Script:
    text = path.read_text()
    key_numbers = [int(n) for n in _KEYS.findall(_header(text))]
    if not key_numbers:
        raise RuntimeError(f"{path.name}: the header lists no KEYS")
    source = _splice(text, include_dir)
    sha = hashlib.sha1(source.encode()).hexdigest()
    return Script(path.stem, source, sha, max(key_numbers))


def load_all(directory: Path | None = None) -> dict[str, Script]:
    """Every script of a Lua folder (default: the package's), by file stem."""
    root = directory or lua_dir()
    return {p.stem: _load(p, root / "include") for p in sorted(root.glob("*.lua"))}


SCRIPTS = load_all()


def script(name: str) -> Script:
    """The script named ``name``; fails at import of the caller if the file is missing."""
    try:
        return SCRIPTS[name]
    except KeyError:
        raise RuntimeError(f"no script lua/{name}.lua") from None
