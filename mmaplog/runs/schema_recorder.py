"""``SchemaRecorder``: writes the schemas of a session's registered structs into its run.

Attached to the session's ``EncoderRegistry`` as a schema listener: the schemas registered
before the session opened are written before the writer starts, and a struct registered while
the session is open is written before ``register_struct`` returns, so ``schemas.json`` always
describes a type before its first entry. Nothing here runs on the capture path.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from mmaplog.storage.fileio import classify_os_error
from mmaplog.storage.schemas import TypeSchema, write_schemas

__all__ = ["SchemaRecorder"]


class SchemaRecorder:
    """Keeps the run's schema records and rewrites ``schemas.json`` when one is added."""

    def __init__(self, run_dir: Path, next_seq: Callable[[], int] = lambda: 1) -> None:
        self._run_dir = run_dir
        self._next_seq = next_seq
        self._lock = threading.Lock()
        self._records: list[TypeSchema] = []
        self._latest: dict[str, TypeSchema] = {}

    def __repr__(self) -> str:
        return f"SchemaRecorder({self._run_dir}, {len(self._records)} schemas)"

    @property
    def records(self) -> list[TypeSchema]:
        with self._lock:
            return list(self._records)

    def set_next_seq(self, next_seq: Callable[[], int]) -> None:
        self._next_seq = next_seq

    def record_all(self, schemas: Iterable[TypeSchema]) -> None:
        """Record several schemas with one write (the ones registered before the session)."""
        with self._lock:
            if any([self._add(schema) for schema in schemas]):
                self._write()

    def __call__(self, schema: TypeSchema) -> None:
        """The registry's listener: record one schema (a no-op when already recorded)."""
        with self._lock:
            if self._add(schema):
                self._write()

    def _add(self, schema: TypeSchema) -> bool:
        current = self._latest.get(schema.payload_type)
        if current is not None and current.schema_hash == schema.schema_hash:
            return False
        # The first schema of a type covers the whole run; a later one starts at the next
        # seq the writer hands out (entries already accepted keep the previous one).
        from_seq = 1 if current is None else self._next_seq()
        record = msgspec.structs.replace(schema, from_seq=from_seq)
        self._records.append(record)
        self._latest[schema.payload_type] = record
        return True

    def _write(self) -> None:
        try:
            write_schemas(self._run_dir, self._records)
        except OSError as exc:
            raise classify_os_error(exc, "cannot write schemas.json") from exc
