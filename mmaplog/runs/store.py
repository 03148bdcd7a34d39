"""``Store``: a root directory of runs, ``<root>/<instance_id>/<run_id>/``, with readers and
sessions opened on its runs."""

from __future__ import annotations

from typing import Any

from mmaplog.runs.reader import Reader
from mmaplog.runs.session import RunSession, open_session
from mmaplog.storage.catalog import DEFAULT_ROOT, ROOT_ENV, RunCatalog, RunInfo, default_root
from mmaplog.storage.manifest import validate_instance_id

__all__ = ["DEFAULT_ROOT", "ROOT_ENV", "RunInfo", "Store", "default_root"]


class Store(RunCatalog):
    """All runs under one root, across instances."""

    def open_reader(self, spec: str, instance_id: str | None = None) -> Reader:
        return Reader(self.resolve(spec, instance_id).run_dir)

    def open_session(self, instance_id: str, **options: Any) -> RunSession:
        """Recover crashed predecessors, open a new run and start capturing.

        Options: ``identity`` (RunIdentity), ``config`` (SessionConfig), ``registry``
        (EncoderRegistry), ``components`` (RegisteredComponents), ``clock``.
        """
        return open_session(self, validate_instance_id(instance_id), **options)
