"""The native core's SHA-256 (src/sha256.c, written from FIPS 180-4) equals hashlib for every
length 0..2048 and random lengths up to 1 MiB, with both compression functions (SHA-NI when
the CPU has it, and the portable scalar one); its constants are the ones derived from the
primes."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmaplog.storage.core import core_description, native

pytestmark = pytest.mark.skipif(
    native is None, reason=f"native core not loaded: {core_description()}"
)
SRC = Path(__file__).resolve().parent.parent / "mmaplog/storage/core/src"


@pytest.fixture(params=["default", "scalar"])
def impl(request: pytest.FixtureRequest) -> Iterator[str]:
    assert native is not None
    name = native.sha256_select(request.param == "scalar")
    try:
        yield name
    finally:
        native.sha256_select(False)


def test_every_length_to_2048(impl):
    rng = random.Random(9162)
    data = rng.randbytes(2048)
    for n in range(2049):
        assert native.sha256(data[:n]) == hashlib.sha256(data[:n]).digest(), (impl, n)


def test_random_lengths_to_1_mib(impl):
    rng = random.Random(180)
    for _ in range(40):
        data = rng.randbytes(rng.randint(0, 1 << 20))
        assert native.sha256(data) == hashlib.sha256(data).digest(), (impl, len(data))
    big = rng.randbytes(1 << 20)
    assert native.sha256(big) == hashlib.sha256(big).digest()


def test_takes_any_buffer(impl):
    data = bytearray(b"abc" * 100)
    assert native.sha256(memoryview(data)[3:]) == hashlib.sha256(data[3:]).digest()


def test_scalar_is_selectable_and_default_comes_back():
    assert native is not None
    assert native.sha256_select(True) == "scalar"
    assert native.sha256_select(False) in ("sha-ni", "scalar")
    assert native.sha256_impl() == native.sha256_select(False)


def test_constants_header_is_the_generated_one():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", SRC / "gen_sha256_consts.py")
    assert spec is not None
    assert spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (SRC / "sha256_consts.h").read_text() == gen.header()
    # FIPS 180-4's published first and last words, as a spot check of the derivation.
    assert "0x428a2f98u" in gen.header()
    assert "0xc67178f2u" in gen.header()
    assert "0x6a09e667u" in gen.header()
    assert "0x5be0cd19u" in gen.header()
