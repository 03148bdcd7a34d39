"""Keeping a run's Merkle tree: leaves from frames, the tree files, checkpoints.

``TreeKeeper`` owns ``merkle.tree`` and ``merkle.frontier`` of one run and appends the leaves
of newly committed entries, read through a read-only ``MmapBackend`` (never the writer's
handle). It resumes from the stored frontier when that frontier is intact, agrees with the
tree file and does not claim more entries than the run has; otherwise it rebuilds from the
frames. ``finish_run`` brings a sealed run's tree up to date and writes its final checkpoint
(checkpoint file, sinks, manifest).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmaplog.errors import FormatError
from mmaplog.integrity.merkle import HASH_SIZE, Frontier, MemoryTree, leaf_hash
from mmaplog.integrity.signing import Signer
from mmaplog.storage.batch import EntryBatch
from mmaplog.storage.checkpoints import Checkpoint, CheckpointLog, append_checkpoint_line
from mmaplog.storage.core import native
from mmaplog.storage.entry_hash import canonical_stream, framed, raw_headers_tail
from mmaplog.storage.manifest import read_manifest, write_manifest
from mmaplog.storage.merkle_files import TreeFile, read_frontier, write_frontier
from mmaplog.storage.mmap_backend import MmapBackend
from mmaplog.storage.run_dir import MANIFEST

__all__ = [
    "CheckpointSink",
    "FramedNames",
    "TreeKeeper",
    "build_tree",
    "file_sink",
    "finish_run",
    "leaf_batches",
    "leaf_blocks",
    "pure_leaf_batches",
]

logger = logging.getLogger(__name__)
CheckpointSink = Callable[[Checkpoint], None]
LEAF_CHUNK = 4096
# The checkpointer's batches: each checked in one call, then hashed in one call per checkpoint
# it spans (every_entries, 10,000 by default), so a thread that fell behind takes the GIL back
# from the engine thread a few times per batch, not per 4,096 entries.
CATCH_UP_CHUNK = 65_536


def leaf_blocks(
    backend: MmapBackend, from_seq: int, to_seq: int, *, chunk: int = LEAF_CHUNK
) -> Iterator[bytes]:
    """The leaf hashes of seqs ``from_seq..=to_seq``, 32 bytes each, concatenated per chunk.

    Frames are checked as ``iter_batches`` checks them (checksums), not their xxh3 entry
    hashes: the leaf covers the same canonical stream with SHA-256. The native core hashes a
    whole chunk with the GIL released (``merkle_leaves_at``, reading the payloads in place);
    :func:`pure_leaf_batches` is the reference it is proven equal to.
    """
    if native is None:
        for leaves in pure_leaf_batches(backend, from_seq, to_seq, chunk=chunk):
            yield b"".join(leaves)
        return
    framed_ids = FramedNames()
    for batch in backend.iter_batches(from_seq, to_seq, chunk=chunk, entry_hashes=False):
        yield native.merkle_leaves_at(*framed_ids.leaf_arguments(batch))


class FramedNames:
    """The framed name of every symbol id a scan met (ids are append-only), and the native
    leaf functions' arguments for a batch: records, segment views, the three int64 payload
    columns, framed names."""

    __slots__ = ("_framed",)

    def __init__(self) -> None:
        self._framed: list[bytes] = []

    def leaf_arguments(
        self, batch: EntryBatch, lo: int = 0, hi: int | None = None
    ) -> tuple[object, ...]:
        """The arguments for rows ``lo..hi`` of ``batch`` (all by default)."""
        names, framed_ids = batch.names, self._framed
        if len(framed_ids) < len(names):
            framed_ids.extend(framed(name) for name in names[len(framed_ids) :])
        views, segment_of = batch.payload_spans
        rows = slice(lo, hi)
        return (
            np.ascontiguousarray(batch.records[rows]).view(np.uint8),
            views,
            np.ascontiguousarray(segment_of[rows], dtype=np.int64),
            np.ascontiguousarray(batch.payload_offsets[rows], dtype=np.int64),
            np.ascontiguousarray(batch.payload_lengths[rows], dtype=np.int64),
            framed_ids,
        )


def leaf_batches(
    backend: MmapBackend, from_seq: int, to_seq: int, *, chunk: int = LEAF_CHUNK
) -> Iterator[list[bytes]]:
    """:func:`leaf_blocks` as a list of 32-byte leaves per chunk."""
    for block in leaf_blocks(backend, from_seq, to_seq, chunk=chunk):
        yield [block[i : i + HASH_SIZE] for i in range(0, len(block), HASH_SIZE)]


def pure_leaf_batches(
    backend: MmapBackend, from_seq: int, to_seq: int, *, chunk: int = LEAF_CHUNK
) -> Iterator[list[bytes]]:
    """:func:`leaf_batches` in Python, one hashlib SHA-256 per entry: the reference."""
    framed_cache: dict[int, bytes] = {}
    for batch in backend.iter_batches(from_seq, to_seq, chunk=chunk, entry_hashes=False):
        recs = batch.records
        raw = np.ascontiguousarray(recs).view(np.uint8).reshape(len(recs), -1)
        corr = raw[:, 56:72].tobytes()
        caus = raw[:, 72:88].tobytes()
        names = batch.names
        fr = framed_cache
        seqs = recs["seq"].tolist()
        ts_i = recs["ts_init"].tolist()
        ts_p = recs["ts_publish"].tolist()
        topics = recs["topic"].tolist()
        ptypes = recs["ptype"].tolist()
        flags = recs["flags"].tolist()
        payloads = batch.payloads
        out: list[bytes] = []
        for k in range(len(seqs)):
            t, p = topics[k], ptypes[k]
            if t not in fr:
                fr[t] = framed(names[t])
            if p not in fr:
                fr[p] = framed(names[p])
            f = flags[k]
            tail = (
                b"\x00\x00"
                if not f
                else raw_headers_tail(f, corr[16 * k : 16 * k + 16], caus[16 * k : 16 * k + 16])
            )
            out.append(
                leaf_hash(
                    canonical_stream(seqs[k], ts_i[k], ts_p[k], fr[t] + fr[p], payloads[k], tail)
                )
            )
        yield out


def build_tree(backend: MmapBackend, size: int | None = None) -> MemoryTree:
    """Every perfect node of the first ``size`` entries (all committed ones by default)."""
    hi = backend.high_watermark() if size is None else size
    return MemoryTree.from_block(b"".join(leaf_blocks(backend, 1, hi)))


def file_sink(path: Path | str) -> CheckpointSink:
    """A sink appending each checkpoint as a JSON line to ``path`` (outside the run)."""
    target = Path(path)
    return lambda checkpoint: append_checkpoint_line(target, checkpoint)


def _split(packed: bytes) -> list[bytes]:
    return [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]


class TreeKeeper:
    """The Merkle files of one run, kept by one thread. Not thread-safe."""

    def __init__(self, run_dir: Path, run_id: str, *, available: int, new: bool = False) -> None:
        """Open (resume) or create the tree files; ``available`` is the run's committed count
        now (a frontier claiming more is stale: rebuilt). ``new``: the run was just created,
        so there is nothing to resume."""
        self.run_dir = run_dir
        self.run_id = run_id
        self.resumed = False
        self._framed = FramedNames()
        try:
            state = read_frontier(run_dir)
            tree = TreeFile.open(run_dir, run_id, writable=True)
        except (FileNotFoundError, FormatError) as exc:
            if not new:
                logger.info("merkle tree of %s rebuilt from the frames: %s", run_id, exc)
        else:
            frontier = self._check(tree, state.size, state.hashes, available)
            if frontier is not None:
                tree.truncate_leaves(frontier.size)
                self.tree, self.frontier, self.resumed = tree, frontier, True
                return
            tree.close()
        self.tree = TreeFile.open(run_dir, run_id, writable=True, create=True)
        self.frontier = Frontier()
        write_frontier(run_dir, 0, ())

    @staticmethod
    def _check(
        tree: TreeFile, size: int, hashes: Sequence[bytes], available: int
    ) -> Frontier | None:
        if size > available:
            return None
        try:
            frontier = Frontier(size, hashes)
            start = i = 0
            for bit in range(size.bit_length() - 1, -1, -1):
                if size >> bit & 1:
                    if tree.perfect(bit, start >> bit) != hashes[i]:
                        return None  # the tree file lags or disagrees: rebuild
                    start += 1 << bit
                    i += 1
        except (FormatError, ValueError):
            return None
        return frontier

    @property
    def size(self) -> int:
        return self.frontier.size

    def catch_up(self, backend: MmapBackend, hwm: int, *, every: int = 0) -> list[Frontier]:
        """Append the leaves of ``size + 1..=hwm``; return a copy of the frontier at each
        multiple of ``every`` passed on the way (none when 0), for the checkpoints due there.

        The nodes go to ``merkle.tree``; ``merkle.frontier`` is left as it was (``save`` and
        ``sync`` write it): a frontier behind the tree is resumed from as well, the file being
        cut to it, and rewriting the frontier file on every catch-up cost capture throughput.
        """
        passed: list[Frontier] = []
        if hwm <= self.frontier.size:
            return passed
        if native is None:
            for leaves in leaf_blocks(backend, self.frontier.size + 1, hwm):
                for lo, hi in self._pieces(len(leaves) // HASH_SIZE, every):
                    block = leaves[lo * HASH_SIZE : hi * HASH_SIZE]
                    self.tree.write_runs(self.frontier.append_block(block))
                    self._passed(every, passed)
            return passed
        # Per piece one native call, the GIL released: the leaves, the frontier append and
        # the tree-file writes (Frontier.append_block + TreeFile.write_runs, byte-identical).
        # A batch spans several multiples of every when the thread is behind: checked once,
        # cut there.
        fd = self.tree.fileno()
        for batch in backend.iter_batches(
            self.frontier.size + 1, hwm, chunk=CATCH_UP_CHUNK, entry_hashes=False
        ):
            for lo, hi in self._pieces(len(batch), every):
                frontier = self.frontier
                packed = native.merkle_extend(
                    *self._framed.leaf_arguments(batch, lo, hi),
                    b"".join(frontier.hashes),
                    frontier.size,
                    fd,
                )
                self.frontier = Frontier(frontier.size + hi - lo, _split(packed))
                self._passed(every, passed)
        return passed

    def follow(
        self, backend: MmapBackend, hwm: int, *, every: int = 0, worker: Any = None
    ) -> list[Frontier]:
        """``catch_up`` as the checkpointer runs it: with the native core, one call with the
        GIL released checks every record and frame, hashes the leaves from the frames while
        they are in cache, appends them and writes the nodes (``merkle_follow``), where
        ``catch_up`` takes a bulk check, numpy columns and a hashing call per piece, each
        taking the GIL back from the engine thread. Byte-identical files and frontiers.

        ``worker``: a native ``TreeFollower`` that runs the pass on its own low-priority thread
        (the calling thread waits, GIL released); a cancelled worker returns early, so the tree
        may end before ``hwm`` then. Where the native pass stops at a seq that fails a check, a
        symbol it does not know yet gets one retry with the names read again; anything else
        goes on through ``catch_up``, whose reference checks raise the typed error for that
        seq."""
        if native is None or hwm <= self.frontier.size:
            return self.catch_up(backend, hwm, every=every)
        passed: list[Frontier] = []
        for attempt in range(2):
            before = self.frontier
            index, checksummed, segments, names = backend.native_sources(
                before.size + 1, hwm, reload_names=attempt > 0
            )
            step = native.merkle_follow if worker is None else worker.run
            size, code, packed, kept = step(
                index,
                checksummed,
                segments,
                names,
                b"".join(before.hashes),
                before.size,
                hwm,
                every,
                self.tree.fileno(),
            )
            self.frontier = Frontier(size, _split(packed))
            if every > 0:
                at = 0
                for mark in range(before.size // every * every + every, size + 1, every):
                    end = at + mark.bit_count() * HASH_SIZE
                    passed.append(Frontier(mark, _split(kept[at:end])))
                    at = end
            if code == 0:
                return passed  # at hwm, or a cancelled worker's early stop
            if code != native.FRAME_SYMBOL:
                break
        passed.extend(self.catch_up(backend, hwm, every=every))
        return passed

    def _pieces(self, n: int, every: int) -> list[tuple[int, int]]:
        """The next ``n`` leaves as row ranges cut at each multiple of ``every``."""
        if every <= 0:
            return [(0, n)]
        out, lo, size = [], 0, self.frontier.size
        while lo < n:
            hi = min(n, lo + every - (size + lo) % every)
            out.append((lo, hi))
            lo = hi
        return out

    def _passed(self, every: int, passed: list[Frontier]) -> None:
        if every > 0 and self.frontier.size % every == 0:
            passed.append(self.frontier.copy())

    def checkpoint(
        self, timestamp_ns: int, signer: Signer | None, frontier: Frontier | None = None
    ) -> Checkpoint:
        """The checkpoint of ``frontier`` (the tree as it is now by default)."""
        frontier = self.frontier if frontier is None else frontier
        cp = Checkpoint(
            run_id=self.run_id,
            tree_size=frontier.size,
            root=frontier.root().hex(),
            timestamp_ns=timestamp_ns,
        )
        return cp if signer is None else signer.sign(cp)

    def save(self) -> None:
        """Replace ``merkle.frontier`` with the frontier, without fsync (the nodes it covers
        are written): what a resume starts from after the process dies."""
        write_frontier(self.run_dir, self.frontier.size, self.frontier.hashes)

    def sync(self) -> None:
        """Make the tree and the frontier durable (at checkpoints): tree nodes first, then the
        frontier that claims them."""
        self.tree.sync()
        write_frontier(self.run_dir, self.frontier.size, self.frontier.hashes, durable=True)

    def close(self) -> None:
        self.tree.close()


def finish_run(
    run_dir: Path,
    timestamp_ns: int,
    signer: Signer | None,
    sinks: Sequence[CheckpointSink] = (),
    *,
    keeper: TreeKeeper | None = None,
) -> Checkpoint:
    """Bring a sealed run's tree to its high-watermark, append its final checkpoint to the
    run's checkpoint file and the sinks, and record it in the manifest."""
    manifest = read_manifest(run_dir / MANIFEST)
    reader = MmapBackend.open_existing(run_dir, writable=False)
    own = keeper is None
    try:
        hwm = reader.high_watermark()
        if keeper is None:
            keeper = TreeKeeper(run_dir, manifest.run_id, available=hwm)
        keeper.catch_up(reader, hwm)
        keeper.sync()
        checkpoint = keeper.checkpoint(timestamp_ns, signer)
    finally:
        reader.close()
        if own and keeper is not None:
            keeper.close()
    log = CheckpointLog(run_dir)
    try:
        log.append(checkpoint)
    finally:
        log.close()
    for sink in sinks:
        sink(checkpoint)
    write_manifest(
        run_dir / MANIFEST, read_manifest(run_dir / MANIFEST).replace(checkpoint=checkpoint)
    )
    return checkpoint
