"""The native core: its xxh3 equals the xxhash package (the reference C library) for every
length 0..4096, random lengths up to 1 MiB and the seeds we use; streaming equals one-shot;
and CI runs on the native core."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import xxhash

from mmaplog.storage.core import CORE, core_description, native

needs_native = pytest.mark.skipif(
    native is None, reason=f"native core not loaded: {core_description()}"
)
SEEDS = (0, 1, 0xDEADBEEF12345678, (1 << 64) - 1)


def test_ci_runs_the_native_core():
    if os.environ.get("CI") != "true":
        pytest.skip("only CI requires the native core (a developer may run MMAPLOG_PURE=1)")
    assert native is not None, f"CI must build the native core, got: {core_description()}"
    assert CORE == "native"


@needs_native
@pytest.mark.parametrize("seed", SEEDS)
def test_xxh3_equals_the_reference_for_every_length_up_to_4096(seed):
    rng = random.Random(seed)
    data = rng.randbytes(4097)
    for n in range(4097):
        chunk = data[:n]
        assert native.xxh3_64(chunk, seed) == xxhash.xxh3_64_intdigest(chunk, seed), n
        assert native.xxh3_128(chunk, seed) == xxhash.xxh3_128_digest(chunk, seed), n


@needs_native
def test_xxh3_equals_the_reference_for_random_lengths_up_to_a_mebibyte():
    rng = random.Random(7)
    for _ in range(60):
        n = rng.randrange(1 << 20)
        seed = rng.choice(SEEDS)
        data = rng.randbytes(n)
        assert native.xxh3_64(data, seed) == xxhash.xxh3_64_intdigest(data, seed), n
        assert native.xxh3_128(data, seed) == xxhash.xxh3_128_digest(data, seed), n


@needs_native
def test_streaming_in_any_split_equals_one_shot():
    rng = random.Random(11)
    for _ in range(300):
        n = rng.choice([rng.randrange(300), rng.randrange(5000), rng.randrange(70000)])
        data = rng.randbytes(n)
        cuts = sorted(rng.randrange(n + 1) for _ in range(rng.randrange(6)))
        parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
        assert native.xxh3_128_parts(parts) == xxhash.xxh3_128_digest(data), (n, cuts)


def test_the_core_in_use_is_named_and_pure_can_be_forced():
    code = "from mmaplog.storage.core import core_description; print(core_description())"
    env = {**os.environ, "MMAPLOG_PURE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "pure-python: MMAPLOG_PURE=1"
    assert core_description() in ("native", core_description())
