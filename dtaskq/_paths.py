"""Where the package's Lua scripts are."""

from pathlib import Path


def lua_dir() -> Path:
    """The ``lua`` folder: inside the package when installed, beside it in a source checkout."""
    packaged = Path(__file__).parent / "lua"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "lua"
