"""``verify_trust``: the run's frames against its Merkle checkpoints and their signatures.

Recomputes every leaf from the frames and checks each checkpoint (the run's
``checkpoints.ckp``, the manifest's final one and any external ones given) in order of size:

* ``CHECKPOINT_SIGNATURE_INVALID``: with a trusted key, a checkpoint that is unsigned, signed
  by another key or whose signature does not verify. It is not used for anything else.
* ``TRUNCATED_SINCE_CHECKPOINT``: a valid checkpoint covers more entries than the run has.
* ``TAMPERED``: the root of the first ``n`` recomputed leaves differs from a valid checkpoint
  of size ``n``. The first differing seq is exact when the run's ``merkle.tree`` still proves
  to that checkpoint's root (its leaves are then the checkpointed ones); otherwise the finding
  gives the range between the last matching checkpoint and the first mismatching one.
* ``CHECKPOINT_MISSING``: no valid checkpoint covers the entries after ``n`` (a sealed run's
  final checkpoint was removed, or entries were appended after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmaplog.errors import CorruptionError, FormatError, MmapLogError
from mmaplog.integrity.findings import Finding, FindingKind
from mmaplog.integrity.merkle import MemoryTree, range_root
from mmaplog.integrity.proofs import run_checkpoints
from mmaplog.integrity.signing import TrustedKey
from mmaplog.integrity.tree_keeper import leaf_batches
from mmaplog.storage.checkpoints import Checkpoint
from mmaplog.storage.merkle_files import TreeFile
from mmaplog.storage.mmap_backend import MmapBackend

__all__ = ["TrustReport", "verify_trust"]


@dataclass(frozen=True, slots=True)
class TrustReport:
    run_id: str
    tree_size: int
    root: str
    checkpoints_checked: int
    findings: tuple[Finding, ...]

    @property
    def is_clean(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "tree_size": self.tree_size,
            "root": self.root,
            "checkpoints_checked": self.checkpoints_checked,
            "findings": [f.to_dict() for f in self.findings],
        }


def verify_trust(
    run_dir: Path | str,
    trusted: TrustedKey | None,
    external: Sequence[Checkpoint] = (),
) -> TrustReport:
    """Check a run against its checkpoints (see the module doc); never modifies a file."""
    run_dir = Path(run_dir)
    backend = MmapBackend.open_existing(run_dir, writable=False)
    try:
        run_id = backend.manifest().run_id
        findings: list[Finding] = []
        leaves: list[bytes] = []
        hwm = backend.high_watermark()
        try:
            for chunk in leaf_batches(backend, 1, hwm):
                leaves.extend(chunk)
        except CorruptionError as exc:
            findings.append(
                Finding(FindingKind.UNREADABLE, f"frames unreadable from seq {exc.seq}: {exc}")
            )
        tree = MemoryTree(leaves)
        candidates = _unique([*run_checkpoints(backend), *external], run_id)
        valid: list[Checkpoint] = []
        for cp in candidates:
            if trusted is not None and not trusted.check(cp):
                why = "unsigned" if cp.signature is None else "signature invalid"
                findings.append(
                    Finding(
                        FindingKind.CHECKPOINT_SIGNATURE_INVALID,
                        f"checkpoint at tree size {cp.tree_size}: {why} for key {trusted.key_id}",
                        seq=cp.tree_size or None,
                    )
                )
                continue
            valid.append(cp)
        findings.extend(_compare(run_dir, run_id, tree, valid))
        covered = max((cp.tree_size for cp in valid), default=0)
        if trusted is not None and covered < tree.size:
            findings.append(
                Finding(
                    FindingKind.CHECKPOINT_MISSING,
                    f"no valid checkpoint covers seqs {covered + 1}..{tree.size}",
                    seq=covered + 1,
                    seq_to=tree.size,
                )
            )
        return TrustReport(run_id, tree.size, tree.root().hex(), len(candidates), tuple(findings))
    finally:
        backend.close()


def _unique(checkpoints: Sequence[Checkpoint], run_id: str) -> list[Checkpoint]:
    seen: set[tuple[int, str, str | None]] = set()
    out: list[Checkpoint] = []
    for cp in checkpoints:
        key = (cp.tree_size, cp.root, cp.signature)
        if cp.run_id == run_id and key not in seen:
            seen.add(key)
            out.append(cp)
    return sorted(out, key=lambda cp: (cp.tree_size, cp.timestamp_ns))


def _compare(
    run_dir: Path, run_id: str, tree: MemoryTree, valid: list[Checkpoint]
) -> list[Finding]:
    findings: list[Finding] = []
    good = 0  # largest checkpointed size whose root the frames reproduce
    for cp in valid:
        if cp.tree_size > tree.size:
            findings.append(
                Finding(
                    FindingKind.TRUNCATED_SINCE_CHECKPOINT,
                    f"checkpoint covers {cp.tree_size} entries, the run has {tree.size}: "
                    f"seqs {tree.size + 1}..{cp.tree_size} are gone",
                    seq=tree.size + 1,
                    seq_to=cp.tree_size,
                )
            )
            break
        if tree.root(cp.tree_size) == cp.root_bytes():
            good = max(good, cp.tree_size)
            continue
        first = _first_differing(run_dir, run_id, tree, cp, good)
        if first is not None:
            message = f"tampered: seq {first} differs from checkpoint at tree size {cp.tree_size}"
            findings.append(Finding(FindingKind.TAMPERED, message, seq=first))
        else:
            findings.append(
                Finding(
                    FindingKind.TAMPERED,
                    f"tampered: a seq in {good + 1}..{cp.tree_size} differs from checkpoint at "
                    f"tree size {cp.tree_size}",
                    seq=good + 1,
                    seq_to=cp.tree_size,
                )
            )
        break  # later roots all include the damage
    return findings


def _first_differing(
    run_dir: Path, run_id: str, tree: MemoryTree, cp: Checkpoint, good: int
) -> int | None:
    """The first seq whose recomputed leaf differs from the stored ``merkle.tree`` leaf, when
    that file proves to the signed root (so its leaves are authentic); else None."""
    try:
        stored = TreeFile.open(run_dir, run_id, writable=False)
    except (FileNotFoundError, MmapLogError):
        return None
    try:
        if range_root(stored, 0, cp.tree_size) != cp.root_bytes():
            return None
        for i in range(good, cp.tree_size):
            if stored.perfect(0, i) != tree.leaf(i):
                return i + 1
    except FormatError:
        return None
    finally:
        stored.close()
    return None
