"""The typed errors of ``mmaplog.query``: each is one line for the CLI (exit 2, except
``RunValueError``: the data cannot be queried, exit 1)."""

from __future__ import annotations

from mmaplog.errors import MmapLogError

__all__ = ["MissingExtraError", "QueryError", "RunValueError", "SelectionError", "SqlError"]


class QueryError(MmapLogError):
    """A question about runs could not be asked or answered."""


class SelectionError(QueryError, ValueError):
    """A bad filter: key spec, time, glob."""


class SqlError(QueryError):
    """DuckDB refused the SQL (parse, binder or runtime error)."""


class RunValueError(QueryError):
    """A run's value (a manifest field) does not fit the column type it is queried as."""


class MissingExtraError(QueryError, ImportError):
    """An optional dependency is not installed; names the extra that brings it."""

    def __init__(self, module: str, extra: str = "analytics") -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{module} is not installed: install the {extra!r} extra "
            f"(pip install 'mmaplog[{extra}]')"
        )


def require(module: str) -> object:
    """Import an optional module or raise ``MissingExtraError`` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module) from None
