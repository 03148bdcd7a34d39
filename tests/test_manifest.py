from __future__ import annotations

import os
import stat

import msgspec
import pytest

from mmaplog import (
    InvalidIdError,
    RegisteredComponents,
    RunManifest,
    RunStatus,
    SnapshotAnchor,
    build_run_id,
    validate_instance_id,
    validate_run_id,
)
from mmaplog.errors import FormatError
from mmaplog.storage.manifest import decode_manifest, encode_manifest, read_manifest, write_manifest


def sealed_manifest() -> RunManifest:
    return RunManifest(
        run_id="123456-1a2b3c4d",
        parent_run_id="123000-00000000",
        instance_id="trader-001",
        binary_hash="abc",
        schema_version=3,
        package_versions="mmaplog=0.1.0",
        feature_flags=["live", "retention=full"],
        adapter_versions={"BINANCE": "1.2"},
        config_hash="cfg",
        registered_components=RegisteredComponents(
            actors={"A-1": "h1"},
            strategies={"S-1": "h2"},
            subscriptions=["quotes"],
            endpoints=["exec.command"],
        ),
        seed=7,
        start_ts_init=123456,
        end_ts_init=999,
        high_watermark=99,
        status=RunStatus.ENDED,
        snapshot_anchor=SnapshotAnchor(high_watermark=50, blob_ref="b", content_hash="h"),
    )


@pytest.mark.parametrize(
    "manifest",
    [RunManifest(run_id="1-00000000", instance_id="i", start_ts_init=1), sealed_manifest()],
)
def test_manifests_round_trip_through_json(manifest):
    assert decode_manifest(encode_manifest(manifest)) == manifest


def test_is_sealed_is_false_only_for_running():
    for status in RunStatus:
        m = RunManifest(run_id="1-00000000", instance_id="i", start_ts_init=1, status=status)
        assert m.is_sealed() == (status is not RunStatus.RUNNING)


def test_build_run_id_is_start_ns_dash_eight_hex_and_unique():
    ids = {build_run_id(123456) for _ in range(200)}
    assert len(ids) == 200
    for run_id in ids:
        assert validate_run_id(run_id) == run_id
        assert run_id.startswith("123456-")


@pytest.mark.parametrize(
    "bad", ["", "..", "../x", "a/b", "123-ABCDEF12", "123-1234567", "x-12345678", "1-12345678/"]
)
def test_invalid_run_ids_are_refused(bad):
    with pytest.raises(InvalidIdError):
        validate_run_id(bad)


@pytest.mark.parametrize("bad", ["", "..", "a..b", "a/b", "/abs", ".hidden", "-x", "x" * 129])
def test_invalid_instance_ids_are_refused(bad):
    with pytest.raises(InvalidIdError):
        validate_instance_id(bad)


def test_write_manifest_is_atomic_and_not_world_writable(tmp_path):
    path = tmp_path / "manifest.json"
    write_manifest(path, sealed_manifest())
    assert read_manifest(path) == sealed_manifest()
    assert not os.stat(path).st_mode & stat.S_IWOTH
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_manifest_of_a_future_version_is_refused(tmp_path):
    data = msgspec.json.decode(encode_manifest(sealed_manifest()))
    data["format_version"] = 2
    path = tmp_path / "manifest.json"
    path.write_bytes(msgspec.json.encode(data))
    with pytest.raises(FormatError, match="version 2"):
        read_manifest(path)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"run_id": 5}', b"\xff\xfe"])
def test_garbage_manifests_are_a_format_error_naming_the_file(tmp_path, content):
    path = tmp_path / "manifest.json"
    path.write_bytes(content)
    with pytest.raises(FormatError) as info:
        read_manifest(path)
    assert "manifest.json" in str(info.value)


def test_a_manifest_naming_a_path_like_run_id_is_refused(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_bytes(encode_manifest(sealed_manifest().replace(run_id="../../etc")))
    with pytest.raises(FormatError, match="invalid id"):
        read_manifest(path)


def test_a_flipped_value_that_is_still_valid_json_fails_the_checksum(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_bytes(encode_manifest(sealed_manifest()).replace(b'"abc"', b'"abd"'))
    with pytest.raises(FormatError, match="checksum mismatch"):
        read_manifest(path)
