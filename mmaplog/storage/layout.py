"""Byte layouts of the segment files, frames and the seq index (format version 1).

Every multi-byte integer is little-endian. ``docs/FORMAT.md`` explains each field; this module
is the single place the layouts are defined in code.

Frame (8-byte aligned, starting at a segment offset that is a multiple of 8)::

    0   u32  length        whole frame in bytes, header to checksum, a multiple of 8
    4   u32  magic         FRAME_MAGIC; with ``length`` this is the commit word, written last
    8   u64  seq
    16  u64  ts_init
    24  u64  ts_publish
    32  u32  topic id      symbol id (symbols.sym)
    36  u32  type id       symbol id of payload_type
    40  u32  payload_len
    44  u16  flags         bit 0: correlation_id present, bit 1: causation_id present
    46  u16  keys_len      bytes of the index-key block after the payload
    48  16B  correlation_id (zero when absent)
    64  16B  causation_id   (zero when absent)
    80  16B  entry_hash     canonical xxh3-128 of the entry's fields (see _hash.py)
    96  payload_len bytes   payload
    ..  keys_len bytes      index keys: per key u8 kind, u16 length, key bytes (UTF-8)
    ..  zero padding to 8
    L-8 u64  checksum      xxh3-64 over bytes [0, L-8): every byte of the frame, header included

After the last frame the next 8 bytes are zero. When the next frame does not fit, an
end-of-segment marker (commit word ``length = 0, magic = EOS_MAGIC``) is written instead.
"""

from __future__ import annotations

import struct

import numpy as np

FORMAT_VERSION = 1

# --- segments -------------------------------------------------------------------------------
SEGMENT_MAGIC = b"MMLOGSEG"
SEGMENT_HEADER = struct.Struct("<8sIIQIIQQQQ")  # magic, version, header size, segment size,
# segment number, reserved, first seq, run-id hash, reserved, checksum
SEGMENT_HEADER_SIZE = 64
assert SEGMENT_HEADER.size == SEGMENT_HEADER_SIZE
DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
MIN_SEGMENT_SIZE = 64 * 1024

# --- frames ---------------------------------------------------------------------------------
FRAME_MAGIC = 0x3146_4C4D  # b"MLF1" little-endian
EOS_MAGIC = 0x534F_454D  # b"MEOS"
FRAME_HEADER = struct.Struct("<IIQQQIIIHH16s16s16s")
FRAME_HEADER_SIZE = 96
assert FRAME_HEADER.size == FRAME_HEADER_SIZE
COMMIT_WORD = struct.Struct("<II")
CHECKSUM = struct.Struct("<Q")
KEY_HEADER = struct.Struct("<BH")
FLAG_CORRELATION = 1
FLAG_CAUSATION = 2
EMPTY_UUID = bytes(16)
MAX_KEY_BYTES = 1024


def frame_length(payload_len: int, keys_len: int) -> int:
    """Bytes a frame occupies: header, payload, keys, padding to 8, checksum."""
    body = FRAME_HEADER_SIZE + payload_len + keys_len
    return ((body + 7) & ~7) + 8


# --- seq index ------------------------------------------------------------------------------
INDEX_MAGIC = b"MMLOGIDX"
INDEX_HEADER = struct.Struct("<8sIIQQ")  # magic, version, record size, committed, checksum
INDEX_HEADER_SIZE = 64
ENTRY_HASH_SIZE = 16  # the canonical xxh3-128 digest an entry carries
INDEX_COMMITTED_OFFSET = 16
INDEX_DTYPE = np.dtype(
    [
        ("seq", "<u8"),
        ("ts_init", "<u8"),
        ("ts_publish", "<u8"),
        ("ts_max", "<u8"),  # running max of ts_init up to this record: sorted, for searchsorted
        ("segment", "<u4"),
        ("offset", "<u4"),
        ("length", "<u4"),
        ("topic", "<u4"),
        ("ptype", "<u4"),
        ("flags", "<u4"),
        # UUID bytes stored as-is, read as two big-endian u64 for vectorised equality
        ("corr_hi", ">u8"),
        ("corr_lo", ">u8"),
        ("caus_hi", ">u8"),
        ("caus_lo", ">u8"),
        ("reserved", "<u8"),
    ]
)
INDEX_RECORD_SIZE = INDEX_DTYPE.itemsize
assert INDEX_RECORD_SIZE == 96
# index.idx versions: 1 leaves the last 8 bytes of a record zero; 2 (written since) stores
# there the xxh3-64 of the record's first INDEX_RECORD_CHECKED bytes.
INDEX_VERSION = 2
INDEX_VERSIONS = (1, 2)
INDEX_RECORD_CHECKED = 88

# --- symbols --------------------------------------------------------------------------------
SYMBOLS_MAGIC = b"MMLOGSYM"
SYMBOLS_HEADER = struct.Struct("<8sII")  # magic, version, reserved
SYMBOLS_HEADER_SIZE = 16
SYMBOL_RECORD = struct.Struct("<II")  # id, byte length; then the bytes, then u64 xxh3 checksum
MAX_SYMBOL_BYTES = 4096


def segment_name(number: int) -> str:
    return f"{number:08d}.seg"


def uuid_halves(raw: bytes) -> tuple[int, int]:
    """Split 16 UUID bytes into two u64 (big-endian halves) for vectorised equality."""
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")
