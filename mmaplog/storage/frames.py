"""``Framer``: how a run turns rows into frames and frames back into entries.

``Framer.append`` frames a batch, writes it into the segments and commits it to the seq index
and the hash index; ``Framer.read_entry`` checks one frame and decodes it into an ``Entry``.
It owns the run's name caches (topic / payload_type strings <-> symbol ids and their hashed
form); the frame layout itself is in ``layout``.
"""

from __future__ import annotations

from collections.abc import Sequence

import xxhash

from mmaplog.errors import (
    BackendError,
    CorruptionError,
    HashMismatchError,
    IndexCorruptError,
    TornFrameError,
)
from mmaplog.storage.entry import Entry, Headers, IndexKey
from mmaplog.storage.entry_hash import framed_names, hash_with_framing, raw_headers_tail
from mmaplog.storage.hash_index import HashIndex
from mmaplog.storage.index_keys import (
    CORRELATION_KIND,
    KEY_HEADERS,
    bad_key_error,
    build_key_block,
    fast_uuid,
)
from mmaplog.storage.layout import (
    COMMIT_WORD,
    EMPTY_UUID,
    EOS_MAGIC,
    FLAG_CAUSATION,
    FLAG_CORRELATION,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    MAX_KEY_BYTES,
    SEGMENT_HEADER_SIZE,
)
from mmaplog.storage.segment_set import SegmentSet
from mmaplog.storage.segments import Segment
from mmaplog.storage.seqindex import INDEX_RECORD, SeqIndex
from mmaplog.storage.symbols import SymbolTable

__all__ = ["Framer", "Row", "frame_too_large"]


def frame_too_large(seq: int, length: int, limit: int) -> BackendError:
    """The error for an entry whose frame no segment holds (both cores)."""
    return BackendError(f"entry seq {seq} needs {length} bytes; a segment holds at most {limit}")


_PADS = [bytes(n) for n in range(8)]
_HEADER_AT = FRAME_HEADER.unpack_from
_EMPTY_HEADERS = Headers.empty()
_CORR_KIND = CORRELATION_KIND.value
_xxh3_64 = xxhash.xxh3_64_intdigest
_EMPTY_TAIL = b"\x00\x00"


# A row to frame: seq, ts_publish, topic, payload_type, payload, ts_init, headers, index keys,
# and the entry hash when the caller already has it (None: compute it here).
Row = tuple[
    int, int, str, str, "bytes | memoryview", int, Headers, "tuple[IndexKey, ...]", "bytes | None"
]


class Framer:
    """Frames rows into a run's segments and decodes its frames, with the run's symbols."""

    def __init__(self, symbols: SymbolTable) -> None:
        self._symbols = symbols
        self._by_names: dict[tuple[str, str], tuple[int, int, bytes]] = {}
        self._by_ids: dict[tuple[int, int], tuple[str, str, bytes]] = {}

    def ids_for(self, topic: str, payload_type: str) -> tuple[int, int, bytes]:
        """Symbol ids of a (topic, payload_type) pair, interned on first use, and the pair as
        the entry hash frames it."""
        names = self._by_names.get((topic, payload_type))
        if names is None:
            symbols = self._symbols
            names = (
                symbols.intern(topic),
                symbols.intern(payload_type),
                framed_names(topic, payload_type),
            )
            self._by_names[(topic, payload_type)] = names
        return names

    def names_for(self, topic_id: int, type_id: int) -> tuple[str, str, bytes]:
        """The strings of two symbol ids read from a frame, and the pair as hashed."""
        names = self._by_ids.get((topic_id, type_id))
        if names is None:
            topic, payload_type = self._symbols.name(topic_id), self._symbols.name(type_id)
            names = (topic, payload_type, framed_names(topic, payload_type))
            self._by_ids[(topic_id, type_id)] = names
        return names

    def append(
        self,
        rows: Sequence[Row],
        segments: SegmentSet,
        index: SeqIndex,
        keys_index: HashIndex,
        ts_max: int,
    ) -> tuple[int, int]:
        """Frame ``rows``, write them at the segments' write position and commit them to the
        seq index and the hash index. Returns the last seq and the new running max of ts_init."""
        seg = segments.current()
        seg_size = seg.size
        pos = segments.pos
        chunk = bytearray()
        chunk_start = pos
        records = bytearray()
        postings: list[tuple[int, bytes, int]] = []
        rolled: list[tuple[Segment, int, bytearray]] = []
        checksum = _xxh3_64
        pack_head = FRAME_HEADER.pack
        pack_record = INDEX_RECORD.pack
        names_for = self.ids_for
        limit = segments.frame_limit
        for seq, ts_pub, topic, ptype, payload, ts_init, headers, index_keys, digest in rows:
            topic_id, type_id, framed = names_for(topic, ptype)
            corr = headers.correlation_id
            caus = headers.causation_id
            if not index_keys:
                key_block = b""
            elif len(index_keys) == 1 and index_keys[0].kind is not CORRELATION_KIND:
                only = index_keys[0]
                raw = only.key.encode()
                if len(raw) > MAX_KEY_BYTES:
                    raise bad_key_error("long-single", raw)
                key_block = KEY_HEADERS[only.kind] + len(raw).to_bytes(2, "little") + raw
                postings.append((only.kind.value, raw, seq))
            else:
                key_block = build_key_block(index_keys, seq, postings)
            n_payload = len(payload)
            if corr is None and caus is None:
                flags = 0
                corr_b = caus_b = EMPTY_UUID
                tail = _EMPTY_TAIL
            else:
                flags = (FLAG_CORRELATION if corr else 0) | (FLAG_CAUSATION if caus else 0)
                corr_b = corr.bytes if corr else EMPTY_UUID
                caus_b = caus.bytes if caus else EMPTY_UUID
                tail = raw_headers_tail(flags, corr_b, caus_b)
                if corr is not None:
                    # The header's correlation id is indexed from the header itself (its raw
                    # bytes), not repeated in the key block: a rebuild reads the header.
                    postings.append((_CORR_KIND, corr_b, seq))
            if digest is None:
                digest = hash_with_framing(seq, ts_init, ts_pub, framed, payload, tail)
            n_keys = len(key_block)
            body_len = FRAME_HEADER_SIZE + n_payload + n_keys
            pad = -body_len & 7
            length = body_len + pad + 8
            if length > limit:
                raise frame_too_large(seq, length, limit)
            body = b"".join(
                (
                    pack_head(
                        length,
                        FRAME_MAGIC,
                        seq,
                        ts_init,
                        ts_pub,
                        topic_id,
                        type_id,
                        n_payload,
                        flags,
                        n_keys,
                        corr_b,
                        caus_b,
                        digest,
                    ),
                    payload,
                    key_block,
                    _PADS[pad],
                )
            )
            if pos + length + 8 > seg_size:
                rolled.append((seg, chunk_start, chunk))
                seg = segments.next_after(seg)
                seg_size = seg.size
                pos = chunk_start = SEGMENT_HEADER_SIZE
                chunk = bytearray()
            chunk += body
            chunk += checksum(body).to_bytes(8, "little")
            if ts_init > ts_max:
                ts_max = ts_init
            records += pack_record(
                seq,
                ts_init,
                ts_pub,
                ts_max,
                seg.number,
                pos,
                length,
                topic_id,
                type_id,
                flags,
                corr_b,
                caus_b,
                0,
            )
            pos += length
        rolled.append((seg, chunk_start, chunk))
        for target, start, data in rolled:
            _write_frames(segments, target, start, data)
        # A segment we rolled away from ends with an explicit end-of-segment marker.
        for target, start, data in rolled[:-1]:
            target.write(COMMIT_WORD.pack(0, EOS_MAGIC), start + len(data))
        first = rows[0][0]
        last = rows[-1][0]
        index.write_records(first, records)
        keys_index.add_many(postings)
        keys_index.commit(last)
        # The committed count is written last: it is what makes the batch visible.
        index.set_committed(last)
        segments.move_to(seg.number, pos)
        if pos > seg.size // 2:
            segments.prepare_next(seg)
        return last, ts_max

    def read_entry(
        self,
        seg: Segment,
        seq: int,
        offset: int,
        copy: bool,
        *,
        expect: tuple[object, ...] | None = None,
        hashes: bool = True,
    ) -> Entry:
        """Check the frame of ``seq`` at ``offset`` of ``seg`` (commit word, length, checksum over
        every byte, seq, its agreement with ``expect``, canonical entry hash) and decode it. The
        caller checked the segment against truncation under its mapping.

        ``expect`` is the seq-index record that led here (``INDEX_RECORD`` unpacked, checked on
        its own): the frame must say what it says, or the record is damaged."""
        view, length = seg.checked_frame(offset, seq)
        (
            _,
            _,
            fseq,
            ts_init,
            ts_pub,
            topic_id,
            type_id,
            n_payload,
            flags,
            n_keys,
            corr,
            caus,
            digest,
        ) = _HEADER_AT(view, offset)
        if fseq != seq:
            raise CorruptionError(
                f"seq mismatch: index says seq {seq}, frame holds seq {fseq}",
                path=seg.path,
                segment=seg.number,
                offset=offset,
                seq=seq,
            )
        if FRAME_HEADER_SIZE + n_payload + n_keys + 8 > length:
            raise TornFrameError(
                "frame lengths disagree", path=seg.path, segment=seg.number, offset=offset, seq=seq
            )
        if expect is not None and (
            expect[6] != length
            or expect[1] != ts_init
            or expect[2] != ts_pub
            or expect[7] != topic_id
            or expect[8] != type_id
            or expect[9] != flags
            or expect[10] != corr
            or expect[11] != caus
        ):
            raise IndexCorruptError(
                "seq index record disagrees with its frame",
                path=seg.path,
                segment=seg.number,
                offset=offset,
                seq=seq,
            )
        names = self._by_ids.get((topic_id, type_id))
        if names is None:
            names = self.names_for(topic_id, type_id)
        start = offset + FRAME_HEADER_SIZE
        payload = view[start : start + n_payload]
        if flags:
            headers = Headers(
                fast_uuid(corr) if flags & FLAG_CORRELATION else None,
                fast_uuid(caus) if flags & FLAG_CAUSATION else None,
            )
        else:
            headers = _EMPTY_HEADERS
        tail = raw_headers_tail(flags, corr, caus)
        if hashes and hash_with_framing(fseq, ts_init, ts_pub, names[2], payload, tail) != digest:
            raise HashMismatchError(
                "entry hash mismatch", path=seg.path, segment=seg.number, offset=offset, seq=seq
            )
        return Entry(
            fseq,
            ts_init,
            ts_pub,
            names[0],
            names[1],
            bytes(payload) if copy else payload,
            headers,
            digest,
        )


def _write_frames(segments: SegmentSet, seg: Segment, start: int, data: bytearray) -> None:
    if not data:
        return
    # Body first, the first frame's commit word last: a crash in between leaves a frame
    # the recovery scan rejects, never a half-written one it accepts.
    view = memoryview(data)
    seg.write(view[8:], start + 8)
    seg.write(view[:8], start)
    segments.mark_dirty(seg.number)
