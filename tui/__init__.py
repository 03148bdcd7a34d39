"""mmaplog-tui: a Textual terminal UI over the runs of an mmaplog store.

Layers: ``mmaplog`` (engine) ← ``replay`` ← ``tui``; nothing here is imported by the engine.
"""

from __future__ import annotations

__all__ = ["MmapLogApp", "main"]


def __getattr__(name: str) -> object:
    # Lazy, so ``import tui.demo`` (tests, benchmarks) does not pull in Textual.
    if name in __all__:
        from tui import app

        return getattr(app, name)
    raise AttributeError(f"module 'tui' has no attribute {name!r}")
