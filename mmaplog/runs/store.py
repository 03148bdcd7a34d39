"""``Store``: a root directory of runs, ``<root>/<instance_id>/<run_id>/``, with readers and
sessions opened on its runs."""

from __future__ import annotations

from mmaplog.engine.capture import EncoderRegistry, Unregistered
from mmaplog.engine.clock import Clock
from mmaplog.runs.reader import Reader
from mmaplog.runs.session import RunIdentity, RunSession, SessionConfig, open_session
from mmaplog.storage.catalog import DEFAULT_ROOT, ROOT_ENV, RunCatalog, RunInfo, default_root
from mmaplog.storage.manifest import RegisteredComponents, validate_instance_id

__all__ = ["DEFAULT_ROOT", "ROOT_ENV", "RunInfo", "Store", "default_root"]


class Store(RunCatalog):
    """All runs under one root, across instances."""

    def open_reader(self, spec: str, instance_id: str | None = None) -> Reader:
        """A ``Reader`` on the run ``spec`` names: a run id, a unique prefix, or ``latest``."""
        return Reader(self.resolve(spec, instance_id).run_dir)

    def open_session(
        self,
        instance_id: str,
        *,
        identity: RunIdentity | None = None,
        config: SessionConfig | None = None,
        registry: EncoderRegistry | None = None,
        components: RegisteredComponents | None = None,
        clock: Clock | None = None,
        unregistered: Unregistered = "ignore",
        start_ts_init: int | None = None,
        source_run_id: str | None = None,
    ) -> RunSession:
        """Recover crashed predecessors, open a new run and start capturing.

        ``identity`` (RunIdentity): what produced the run, stamped into the manifest.
        ``config`` (SessionConfig): writer knobs, segment size, boot timeout, bus audit mode.
        ``registry`` (EncoderRegistry): the message classes captured (default: none).
        ``components`` (RegisteredComponents): the RunStarted payload.
        ``clock`` (Clock): where ``ts_publish`` comes from (default: the wall clock).
        ``unregistered``: ``"ignore"`` / ``"warn"`` / ``"raise"`` for a message whose class
        ``registry`` does not know (see ``open_session`` in ``mmaplog.runs.session``).
        ``start_ts_init`` / ``source_run_id``: the run's start, and the run it re-derives.
        """
        return open_session(
            self,
            validate_instance_id(instance_id),
            identity=identity,
            config=config,
            registry=registry,
            components=components,
            clock=clock,
            unregistered=unregistered,
            start_ts_init=start_ts_init,
            source_run_id=source_run_id,
        )
