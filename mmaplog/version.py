"""The package version, and the one line every CLI prints for ``--version``."""

from __future__ import annotations

from mmaplog.storage.core import core_description

__all__ = ["__version__", "version_line"]

__version__ = "0.2.0"


def version_line(prog: str = "mmaplog") -> str:
    """``mmaplog 0.2.0 (core: native)`` or ``... (core: pure-python: <why>)``: the program, the
    package version and what implements the per-entry loops in this process."""
    return f"{prog} {__version__} (core: {core_description()})"
