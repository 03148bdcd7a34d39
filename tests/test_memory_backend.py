from __future__ import annotations

import msgspec
import pytest

from mmaplog import HashMismatchError, MemoryBackend
from tests.backend_conformance import BackendConformance


class TestMemoryBackend(BackendConformance):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()

    def tamper(self, backend, seq):
        entry = backend.scan_seq(seq)
        backend._replace_entry_unchecked(msgspec.structs.replace(entry, payload=b"evil"))

    def test_tampered_payload_is_a_hash_mismatch_naming_the_seq(self, opened):
        self.tamper(opened, 1)
        with pytest.raises(HashMismatchError) as info:
            opened.scan_seq(1)
        assert info.value.seq == 1
