"""``SegmentSet``: a run's segment files in order, and where the writer appends next.

It owns the list of open ``Segment`` objects, the write position (current segment and offset),
the set of segments written since the last sync, and the life cycle of the files: opening and
checking that they are contiguous, preparing the next segment ahead of need, dropping segments
past a repaired tail, and giving back preallocated space at seal. Readers use it to find a
segment by number, picking up segments the writer created since they opened the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from mmaplog.errors import FormatError, IndexCorruptError
from mmaplog.storage.fileio import punch_hole
from mmaplog.storage.layout import SEGMENT_HEADER_SIZE, segment_name
from mmaplog.storage.manifest import fsync_dir
from mmaplog.storage.segments import Segment

__all__ = ["SegmentSet"]

_PAGE = 4096


class SegmentSet:
    """The segments of one run directory (``<run>/segments/``)."""

    def __init__(
        self,
        directory: Path,
        segment_size: int,
        run_hash: int,
        *,
        writable: bool,
        check_free_space: Callable[[Path], None] | None = None,
    ) -> None:
        self.directory = directory
        self.segment_size = segment_size  # size of segments this set creates
        self._run_hash = run_hash
        self._writable = writable
        self._check_free_space = check_free_space
        self._segments: list[Segment] = []
        self._cur = 0  # segment being written; the next one may already be prepared
        self._pos = SEGMENT_HEADER_SIZE  # write position in that segment
        self._dirty: set[int] = set()

    def __repr__(self) -> str:
        return f"SegmentSet({self.directory}, {len(self._segments)} segments)"

    def __len__(self) -> int:
        return len(self._segments)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._segments)

    def __getitem__(self, number: int) -> Segment:
        return self._segments[number]

    # --- opening ----------------------------------------------------------------------------
    def open_existing(self) -> None:
        """Open every segment file; their names must run 0, 1, 2, ... without a hole."""
        try:
            names = sorted(p.name for p in self.directory.iterdir() if p.name.endswith(".seg"))
        except FileNotFoundError:
            raise FormatError("missing segments directory", path=self.directory) from None
        for number, name in enumerate(names):
            if name != segment_name(number):
                raise FormatError(
                    f"segment files are not contiguous: found {name}, expected "
                    f"{segment_name(number)}",
                    path=self.directory / name,
                )
            self._segments.append(
                Segment.open(self.directory / name, number, self._run_hash, writable=self._writable)
            )
        if not self._segments:
            raise FormatError("run has no segment files", path=self.directory)

    def create_first(self) -> None:
        """Create segment 0 of a new run (first seq 1)."""
        self._segments = [Segment.create(self.directory, 0, self.segment_size, 1, self._run_hash)]
        self.move_to(0, SEGMENT_HEADER_SIZE)

    def rebind(self, directory: Path) -> None:
        """The run directory was renamed: fds stay valid, only the paths in messages change."""
        self.directory = directory
        for seg in self._segments:
            seg.path = directory / seg.path.name

    @property
    def frame_limit(self) -> int:
        """The largest frame a segment this set creates can hold (header and the zero word
        after the last frame excluded)."""
        return self.segment_size - SEGMENT_HEADER_SIZE - 8

    # --- the write position -----------------------------------------------------------------
    @property
    def cur(self) -> int:
        return self._cur

    @property
    def pos(self) -> int:
        return self._pos

    def current(self) -> Segment:
        return self._segments[self._cur]

    def move_to(self, number: int, pos: int) -> None:
        """The next frame goes to segment ``number`` at ``pos``."""
        self._cur = number
        self._pos = pos

    def next_after(self, seg: Segment) -> Segment:
        """The segment to roll over to from ``seg``, created now if it was not prepared."""
        if seg.number + 1 >= len(self._segments):
            self.prepare_next(seg)
        return self._segments[seg.number + 1]

    def prepare_next(self, seg: Segment) -> None:
        """Create the next segment ahead of need, so rolling over costs no file creation."""
        if seg.number + 1 < len(self._segments):
            return
        if self._check_free_space is not None:
            self._check_free_space(self.directory)
        self._segments.append(
            Segment.create(self.directory, seg.number + 1, self.segment_size, 0, self._run_hash)
        )

    def mark_dirty(self, number: int) -> None:
        self._dirty.add(number)

    def sync_dirty(self) -> None:
        """fdatasync every segment written since the last call."""
        for number in sorted(self._dirty):
            self._segments[number].sync()
        self._dirty.clear()

    def drop_after(self, number: int) -> None:
        """Delete the segments after ``number``: past a repaired tail they hold no committed
        frame."""
        spare = self._segments[number + 1 :]
        del self._segments[number + 1 :]
        for seg in spare:
            seg.close()
            seg.path.unlink()
        if spare:
            # The unlinks must not come back after a power loss: a seal says they are gone.
            fsync_dir(self.directory)

    def release_unused_space(self) -> None:
        """A sealed run never grows: give back the blocks preallocated past the last frame
        (from the next page boundary, so the zero word after the last frame stays) and drop
        the segment prepared ahead. Holes keep every file's size, so readers that have the
        files mapped are unaffected."""
        seg = self._segments[self._cur]
        keep = (self._pos + 8 + _PAGE - 1) // _PAGE * _PAGE
        if keep < seg.size:
            punch_hole(seg.fd, keep, seg.size - keep)
        self.drop_after(self._cur)

    # --- reading ----------------------------------------------------------------------------
    def get(self, number: int, seq: int, index_path: Path | None) -> Segment:
        """Segment ``number``, which the index record of ``seq`` names. A reader looks for
        segments created since it opened the run before calling the record corrupt."""
        if number >= len(self._segments):
            if not self._writable:
                self.refresh()
            if number >= len(self._segments):
                raise IndexCorruptError(
                    f"index points at missing segment {number}", path=index_path, seq=seq
                )
        return self._segments[number]

    def refresh(self) -> None:
        """Open the segments the writer created since the last look."""
        while True:
            path = self.directory / segment_name(len(self._segments))
            if not path.exists():
                return
            self._segments.append(Segment.open(path, len(self._segments), self._run_hash))

    def check_not_truncated(self) -> None:
        """A segment cut short under an existing mapping would SIGBUS a read: check them all."""
        for seg in self._segments:
            seg.check_not_truncated()

    def close(self) -> None:
        for seg in self._segments:
            seg.close()
        self._segments = []
        self._dirty.clear()
