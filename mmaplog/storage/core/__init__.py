"""The native core: which implementation of the per-entry loops this process runs.

``_native`` is a C extension built from ``src/`` by ``pip install`` (setup.py): xxh3 written
from the xxHash specification, the submit channel between the engine thread and the writer
thread, and the batch framer (frames, index records, hash-index postings) that runs with the
GIL released. The pure-Python modules of ``mmaplog.storage`` and ``mmaplog.engine`` stay the
reference implementation and the fallback; both write byte-identical runs.

``MMAPLOG_PURE=1`` forces the pure core. When the extension is missing (no compiler at install
time) the library says so once, in a warning, and runs the pure core.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

__all__ = ["CORE", "PURE_ENV", "core_description", "native"]

PURE_ENV = "MMAPLOG_PURE"

logger = logging.getLogger("mmaplog")


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return None, f"{PURE_ENV}={os.environ[PURE_ENV]}"
    try:
        from mmaplog.storage.core import _native  # type: ignore[attr-defined]
    except ImportError as exc:
        why = f"native extension not available ({exc})"
        logger.warning("mmaplog runs its pure-Python core: %s", why)
        return None, why
    return _native, ""


native, _why_pure = _load()
CORE = "native" if native is not None else "pure-python"


def core_description() -> str:
    """``native``, or ``pure-python: <why>``."""
    return CORE if native is not None else f"{CORE}: {_why_pure}"
