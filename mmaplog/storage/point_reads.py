"""A reader's point reads in one native call each: ``lookup_all`` and ``seek_ts``.

``MmapBackend.lookup_all`` and ``MmapBackend.seek_ts`` are the reference: per lookup they read
the committed count, guard keys.hix and index.idx against truncation under their mappings,
walk the key's postings and check the records of the seqs they hand out (three syscalls, a
dozen Python calls). With the native core loaded, a reader runs the same guards and checks in
one C call (``lookup.c``) that either answers or refers: None here means the reference must
answer, and the backend then runs its own path from the start, which raises the typed error
(a damaged or cut file) or remaps (a file that grew or was rebuilt) and answers. So both cores
give the same answers and the same errors; ``tests/test_lookup_differential.py`` checks it.
"""

from __future__ import annotations

from mmaplog.storage.core import native
from mmaplog.storage.entry import IndexKind
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.index_keys import posting_key
from mmaplog.storage.seqindex import SeqIndex

__all__ = ["lookup_all", "seek_ts"]


def lookup_all(
    keys: HashIndex | None, index: SeqIndex | None, kind: IndexKind, key: str
) -> list[int] | None:
    """The committed seqs carrying (kind, key), their records checked; None: refer."""
    if native is None or keys is None or index is None:
        return None
    view = index.read_view()
    if view is None:
        return None
    try:
        stored = posting_key(kind, key)
    except ValueError:
        return None  # not a UUID: the reference says so after its own guards
    # kind is an IntEnum: C reads it as the int it is (Enum.value is a slow descriptor).
    seqs: list[int] | None = native.read_lookup_all(keys.read_view(), kind, stored, view)
    return seqs


def seek_ts(index: SeqIndex | None, ts_init: int) -> int | None:
    """The first seq whose ts_max is >= ``ts_init``, 0 when none is; None: refer (and always
    for a v1 index, whose records the reference checks against their frames)."""
    if native is None or index is None:
        return None
    view = index.read_view()
    if view is None:
        return None
    seq: int | None = native.read_seek_ts(view, ts_init)
    return seq
