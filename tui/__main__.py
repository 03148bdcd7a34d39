"""``python -m tui``: the same as ``mmaplog-tui``."""

from __future__ import annotations

from tui.app import main

raise SystemExit(main())
