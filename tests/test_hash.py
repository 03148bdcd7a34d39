"""The canonical entry hash: pinned vectors, sensitivity to every field, length framing."""

from __future__ import annotations

import struct
import uuid

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import mmaplog.storage.entry_hash as entry_hash_module
from mmaplog import Entry, Headers, compute_entry_hash
from mmaplog.storage.core import native
from mmaplog.storage.entry_hash import framed_names, hash_with_framing, headers_tail

TS = 1_700_000_000_000_000_000
CORR = uuid.UUID(bytes=bytes(range(1, 17)))
CAUS = uuid.UUID(bytes=bytes(range(17, 33)))
BASE = dict(
    seq=42,
    ts_init=TS,
    ts_publish=TS + 1,
    topic="exec.command",
    payload_type="SubmitOrder",
    payload=b"\x01\x02\x03",
    headers=Headers.empty(),
)


def digest(**changes):
    fields = {**BASE, **changes}
    return compute_entry_hash(**fields)


def test_pinned_vector_with_empty_headers():
    assert digest().hex() == "6bd28ba739a03e03cafd9781687dc48a"


def test_pinned_vector_with_both_headers():
    assert digest(headers=Headers(CORR, CAUS)).hex() == "3945f7c771bd8d6fe53c0368630178eb"


def test_the_hash_is_xxh3_128_of_the_documented_byte_stream():
    stream = (
        b"mmaplog/entry/v1"
        + (42).to_bytes(8, "big")
        + TS.to_bytes(8, "big")
        + (TS + 1).to_bytes(8, "big")
        + (12).to_bytes(8, "big")
        + b"exec.command"
        + (11).to_bytes(8, "big")
        + b"SubmitOrder"
        + (3).to_bytes(8, "big")
        + b"\x01\x02\x03"
        + b"\x01"
        + CORR.bytes
        + b"\x00"
    )
    assert digest(headers=Headers(CORR, None)) == xxhash.xxh3_128_digest(stream)


def test_the_hash_is_deterministic_and_16_bytes():
    assert digest() == digest()
    assert len(digest()) == 16


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 43},
        {"ts_init": TS + 7},
        {"ts_publish": TS + 7},
        {"topic": "exec.commanD"},
        {"payload_type": "CancelOrder"},
        {"payload": b"\x01\x02\x04"},
        {"headers": Headers(CORR, None)},
        {"headers": Headers(None, CAUS)},
    ],
    ids=lambda c: next(iter(c)) + ("" if "headers" not in c else str(c["headers"]))[:20],
)
def test_every_field_changes_the_hash(change):
    assert digest(**change) != digest()


def test_correlation_and_causation_are_not_interchangeable():
    assert digest(headers=Headers(CORR, None)) != digest(headers=Headers(None, CORR))


def test_length_framing_keeps_topic_and_type_boundaries_apart():
    assert digest(topic="ab", payload_type="c") != digest(topic="a", payload_type="bc")
    assert digest(payload_type="ab", payload=b"c") != digest(payload_type="a", payload=b"bc")


def test_recompute_hash_matches_a_fresh_entry_and_a_changed_payload_breaks_it():
    entry = Entry(**{k: v for k, v in BASE.items()}, entry_hash=digest())
    assert entry.verify()
    import msgspec

    assert not msgspec.structs.replace(entry, payload=b"\x09").verify()


def test_default_headers_are_empty_and_equal_empty():
    assert Headers() == Headers.empty()
    assert Headers().is_empty()
    assert not Headers(CORR, None).is_empty()


@given(
    seq=st.integers(0, 2**64 - 1),
    ts=st.integers(0, 2**64 - 1),
    topic=st.text(max_size=40),
    ptype=st.text(max_size=40),
    payload=st.binary(max_size=300),
    corr=st.none() | st.uuids(),
    caus=st.none() | st.uuids(),
)
def test_the_hot_path_form_equals_the_canonical_hash(seq, ts, topic, ptype, payload, corr, caus):
    headers = Headers(corr, caus)
    fast = hash_with_framing(
        seq, ts, ts, framed_names(topic, ptype), payload, headers_tail(headers)
    )
    assert fast == compute_entry_hash(seq, ts, ts, topic, ptype, payload, headers)


@pytest.mark.skipif(native is None, reason="the native core is not loaded")
@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(0, 2**64 - 1),
    ts=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    topic=st.text(max_size=40),
    payload_type=st.text(max_size=20),
    payload=st.one_of(st.binary(max_size=300), st.binary(min_size=4000, max_size=9000)),
    ids=st.tuples(st.none() | st.uuids(), st.none() | st.uuids()),
)
def test_the_native_entry_hash_equals_the_reference_stream(
    seq, ts, topic, payload_type, payload, ids
):
    headers = Headers(*ids)
    fields = (seq, *ts, topic, payload_type, payload, headers)
    reference = entry_hash_module._xxh3_128(entry_hash_module.entry_stream(*fields))
    assert native.entry_hash(*fields) == reference
    assert compute_entry_hash(*fields) == reference


def test_odd_inputs_get_the_reference_answer_or_its_error():
    class Ids:  # a duck-typed HeaderIds: properties, no slots
        @property
        def correlation_id(self):
            return uuid.UUID(int=1)

        causation_id = None

    plain = compute_entry_hash(1, 2, 3, "t", "P", b"abc", Headers(uuid.UUID(int=1)))
    assert compute_entry_hash(1, 2, 3, "t", "P", bytearray(b"abc"), Ids()) == plain
    assert compute_entry_hash(1, 2, 3, "t", "P", memoryview(b"abc"), Ids()) == plain
    with pytest.raises(struct.error):
        compute_entry_hash(-1, 2, 3, "t", "P", b"abc", Headers())
    with pytest.raises(AttributeError):
        compute_entry_hash(1, 2, 3, 4, "P", b"abc", Headers())
