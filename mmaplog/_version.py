"""The package version, and the one line every CLI prints for ``--version``."""

from __future__ import annotations

__all__ = ["__version__", "version_line"]

__version__ = "0.1.0"


def version_line(prog: str = "mmaplog") -> str:
    """``mmaplog 0.1.0 (core: pure-python: no native extension built)``: the program, the
    package version and what implements the storage core in this process. The only place that
    says so: a native core changes this function and every CLI follows."""
    return f"{prog} {__version__} (core: pure-python: no native extension built)"
