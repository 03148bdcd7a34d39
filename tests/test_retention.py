"""plan_retention / apply_retention: whole sealed runs, never a RUNNING one, always keeping the
newest known-good restore point (the reference's retention checklist, §11.13)."""

from __future__ import annotations

import fcntl
import os

import pytest

from mmaplog import RunManifest, RunStatus, SnapshotAnchor, Store
from mmaplog.integrity.retention import (
    RetentionKind,
    RetentionMode,
    apply_retention,
    parse_duration,
    plan_retention,
)
from mmaplog.storage.mmap_backend import MmapBackend
from tests.test_verify import INSTANCE, START, build_run, edit_manifest, set_committed

SECOND = 1_000_000_000


def rid(n: int) -> str:
    return f"{START + n * SECOND}-{n:08x}"


def sealed(
    root, n: int, status=RunStatus.ENDED, *, entries: int = 5, anchor=None, instance=INSTANCE
):
    return build_run(
        root, entries, status=status, run_id=rid(n), instance=instance, anchor=anchor, batch=50
    )


def running(root, n: int):
    """A live run: its writer holds the LOCK. Close the returned backend to end it."""
    backend = MmapBackend(root, INSTANCE)
    backend.open_run(
        RunManifest(run_id=rid(n), instance_id=INSTANCE, start_ts_init=START + n * SECOND)
    )
    return backend


def ids(runs) -> list[str]:
    return [r.run_id for r in runs]


# --- modes ------------------------------------------------------------------------------------
def test_retention_modes_read_like_the_reference_and_validate_their_arguments():
    assert RetentionMode.FULL.kind is RetentionKind.FULL
    assert RetentionMode.KEEP_LAST(3).keep_last == 3
    assert RetentionMode.OLDER_THAN(parse_duration("7d")).older_than_s == 7 * 86400
    assert str(RetentionMode.SNAPSHOT_ANCHORED) == "snapshot_anchored"
    assert parse_duration("90") == 90
    assert parse_duration("15m") == 900
    with pytest.raises(ValueError, match="non-negative"):
        RetentionMode.KEEP_LAST(-1)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("7 days")


def test_full_reclaims_nothing(tmp_path):
    for n in (1, 2, 3):
        sealed(tmp_path, n)
    plan = plan_retention(Store(tmp_path), RetentionMode.FULL)
    assert plan.reclaim == ()
    assert ids(plan.kept) == [rid(1), rid(2), rid(3)]


def test_keep_last_sorts_runs_by_start_before_choosing(tmp_path):
    for n in (3, 1, 2):  # created out of order
        sealed(tmp_path, n)
    plan = plan_retention(Store(tmp_path), RetentionMode.KEEP_LAST(1))
    assert ids(plan.reclaim) == [rid(1), rid(2)]
    assert ids(plan.kept) == [rid(3)]
    assert ids(plan.restore_points) == [rid(3)]


def test_running_runs_are_never_reclaimed_nor_counted(tmp_path):
    sealed(tmp_path, 1)
    sealed(tmp_path, 2)
    live = running(tmp_path, 3)
    build_run(tmp_path, 5, status=None, run_id=rid(4))  # crashed, waiting for recovery
    try:
        plan = plan_retention(Store(tmp_path), RetentionMode.KEEP_LAST(1))
    finally:
        live.close()
    assert ids(plan.reclaim) == [rid(1)]
    assert ids(plan.kept) == [rid(2), rid(3), rid(4)]


def test_keep_last_keeps_the_known_good_restore_point_when_the_latest_is_quarantined(tmp_path):
    sealed(tmp_path, 1)
    sealed(tmp_path, 2)
    sealed(tmp_path, 3, RunStatus.QUARANTINED)
    plan = plan_retention(Store(tmp_path), RetentionMode.KEEP_LAST(1))
    assert ids(plan.kept) == [rid(2), rid(3)]
    assert ids(plan.reclaim) == [rid(1)]
    assert ids(plan.restore_points) == [rid(2)]


def test_without_a_known_good_restore_point_nothing_is_reclaimed(tmp_path):
    sealed(tmp_path, 1, RunStatus.QUARANTINED)
    sealed(tmp_path, 2, RunStatus.QUARANTINED)
    sealed(tmp_path, 3, RunStatus.CRASHED_RECOVERED, entries=0)  # empty: nothing to restore
    plan = plan_retention(Store(tmp_path), RetentionMode.KEEP_LAST(0))
    assert plan.reclaim == ()
    assert plan.restore_points == ()


@pytest.mark.parametrize(
    "mode", [RetentionMode.KEEP_LAST(0), RetentionMode.OLDER_THAN(0), RetentionMode.KEEP_LAST(1)]
)
def test_runs_kept_for_want_of_a_restore_point_say_so(tmp_path, mode):
    # The reason used to be computed after the plan emptied what the mode chose, so a lone
    # quarantined run was "kept among the newest 0 sealed runs".
    sealed(tmp_path, 1, RunStatus.QUARANTINED)
    sealed(tmp_path, 2, RunStatus.QUARANTINED)
    plan = plan_retention(Store(tmp_path), mode, now_ns=START + 10**6 * SECOND)
    assert plan.reclaim == ()
    reasons = [plan.reason(info) for info in plan.kept]
    if mode.keep_last == 1:
        assert reasons[0].startswith("no known-good restore point in this instance")
        assert reasons[1] == "among the newest 1 sealed runs"
    else:
        assert all(r.startswith("no known-good restore point in this instance") for r in reasons)


def test_a_run_whose_manifest_disagrees_with_its_index_is_not_a_restore_point(tmp_path):
    sealed(tmp_path, 1)
    latest = sealed(tmp_path, 2)
    set_committed(latest, 3)  # the index lost entries the manifest still counts
    plan = plan_retention(Store(tmp_path), RetentionMode.KEEP_LAST(0))
    assert ids(plan.restore_points) == [rid(1)]
    assert ids(plan.reclaim) == [rid(2)]


def test_older_than_reclaims_runs_that_ended_before_the_cutoff(tmp_path):
    for n in (1, 2, 3, 4):
        sealed(tmp_path, n)
    now = START + 4 * SECOND + 10 * SECOND
    plan = plan_retention(Store(tmp_path), RetentionMode.OLDER_THAN(12.5), now_ns=now)
    assert ids(plan.reclaim) == [rid(1)]
    everything = plan_retention(Store(tmp_path), RetentionMode.OLDER_THAN(0), now_ns=now)
    assert ids(everything.reclaim) == [rid(1), rid(2), rid(3)]  # not the restore point
    assert ids(everything.kept) == [rid(4)]


def test_a_run_whose_manifest_is_unreadable_is_never_reclaimed(tmp_path):
    broken = sealed(tmp_path, 1)
    sealed(tmp_path, 2)
    sealed(tmp_path, 3)
    (broken / "manifest.json").write_bytes(b"{")
    plan = plan_retention(Store(tmp_path), RetentionMode.KEEP_LAST(0))
    assert ids(plan.reclaim) == [rid(2)]
    assert rid(1) in ids(plan.kept)


def test_retention_applies_per_instance(tmp_path):
    for n in (1, 2, 3):
        sealed(tmp_path, n)
        sealed(tmp_path, n + 10, instance="trader-002")
    plan = plan_retention(Store(tmp_path), RetentionMode.KEEP_LAST(1))
    assert sorted(ids(plan.reclaim)) == sorted([rid(1), rid(2), rid(11), rid(12)])
    one = plan_retention(Store(tmp_path), RetentionMode.KEEP_LAST(1), instance_id="trader-002")
    assert ids(one.reclaim) == [rid(11), rid(12)]


# --- snapshot anchors -------------------------------------------------------------------------
def test_snapshot_anchored_reclaims_only_runs_older_than_the_latest_valid_anchor(tmp_path):
    sealed(tmp_path, 1)
    sealed(tmp_path, 2, anchor=3)
    sealed(tmp_path, 3)
    sealed(tmp_path, 4, anchor=2)
    sealed(tmp_path, 5)
    plan = plan_retention(Store(tmp_path), RetentionMode.SNAPSHOT_ANCHORED)
    assert ids(plan.reclaim) == [rid(1), rid(2), rid(3)]
    assert ids(plan.restore_points) == [rid(4)]


def test_missing_or_invalid_anchors_reclaim_nothing(tmp_path):
    sealed(tmp_path, 1)
    sealed(tmp_path, 2)
    assert plan_retention(Store(tmp_path), RetentionMode.SNAPSHOT_ANCHORED).reclaim == ()
    past = sealed(tmp_path, 3)
    edit_manifest(
        past, snapshot_anchor=SnapshotAnchor(high_watermark=6, blob_ref="b", content_hash="h")
    )
    plan = plan_retention(Store(tmp_path), RetentionMode.SNAPSHOT_ANCHORED)
    assert plan.reclaim == ()  # the anchor is past the durable high-watermark: invalid


def test_an_anchor_on_a_quarantined_run_is_not_a_restore_point(tmp_path):
    sealed(tmp_path, 1)
    sealed(tmp_path, 2, RunStatus.QUARANTINED, anchor=3)
    assert plan_retention(Store(tmp_path), RetentionMode.SNAPSHOT_ANCHORED).reclaim == ()


# --- applying ---------------------------------------------------------------------------------
def test_apply_deletes_whole_runs_and_leaves_nothing_half_listed(tmp_path):
    for n in (1, 2, 3):
        sealed(tmp_path, n)
    store = Store(tmp_path)
    plan = plan_retention(store, RetentionMode.KEEP_LAST(1))
    deleted = apply_retention(plan)
    assert deleted == [r.run_dir for r in plan.reclaim]
    assert ids(store.runs()) == [rid(3)]
    assert sorted(p.name for p in (tmp_path / INSTANCE).iterdir()) == [rid(3)]


def test_apply_finishes_a_delete_a_crash_interrupted(tmp_path):
    for n in (1, 2, 3):
        sealed(tmp_path, n)
    store = Store(tmp_path)
    plan = plan_retention(store, RetentionMode.KEEP_LAST(2))
    # A crash after the rename, before the tree was removed:
    first = plan.reclaim[0]
    first.run_dir.rename(tmp_path / INSTANCE / f".deleting-{first.run_id}")
    assert ids(store.runs()) == [rid(2), rid(3)]  # already out of every listing
    sealed(tmp_path, 4)
    apply_retention(plan_retention(store, RetentionMode.KEEP_LAST(2)))
    assert sorted(p.name for p in (tmp_path / INSTANCE).iterdir()) == [rid(3), rid(4)]


def test_apply_skips_a_run_that_is_no_longer_reclaimable(tmp_path):
    for n in (1, 2, 3):
        sealed(tmp_path, n)
    store = Store(tmp_path)
    plan = plan_retention(store, RetentionMode.KEEP_LAST(1))
    first, second = plan.reclaim
    fd = os.open(first.run_dir / "LOCK", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # someone holds it now
    edit_manifest(second.run_dir, status=RunStatus.RUNNING, high_watermark=0, end_ts_init=None)
    try:
        assert apply_retention(plan) == []
    finally:
        os.close(fd)
    assert ids(store.runs()) == [rid(1), rid(2), rid(3)]


def test_plans_serialise_for_the_cli(tmp_path):
    import json

    sealed(tmp_path, 1)
    sealed(tmp_path, 2)
    data = json.loads(
        json.dumps(plan_retention(Store(tmp_path), RetentionMode.KEEP_LAST(1)).to_dict())
    )
    assert data == {
        "mode": "keep_last(1)",
        "kept": [f"{INSTANCE}/{rid(2)}"],
        "reclaim": [f"{INSTANCE}/{rid(1)}"],
        "restore_points": [f"{INSTANCE}/{rid(2)}"],
        "reasons": {f"{INSTANCE}/{rid(2)}": "newest known-good restore point"},
        "refused": [],
    }


def _symlinked(root, n, elsewhere):
    """Move run ``n`` out of the store and link its directory back in."""
    run_dir = root / INSTANCE / rid(n)
    target = elsewhere / rid(n)
    run_dir.rename(target)
    run_dir.symlink_to(target)
    return run_dir, target


def test_a_symlinked_run_is_kept_with_its_reason_and_never_deleted(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    sealed(root, 1)
    sealed(root, 2)
    sealed(root, 3)
    link, target = _symlinked(root, 1, elsewhere)
    plan = plan_retention(Store(root), RetentionMode.KEEP_LAST(0))
    assert ids(plan.reclaim) == [rid(2)]
    assert ids(plan.refused) == [rid(1)]
    assert rid(1) in ids(plan.kept)
    assert plan.reason(plan.refused[0]) == (
        f"its directory is a symbolic link (to {target}): retention never deletes through a link"
    )
    assert plan.to_dict()["refused"] == [f"{INSTANCE}/{rid(1)}"]
    assert apply_retention(plan) == [root / INSTANCE / rid(2)]
    assert link.is_symlink()
    assert (target / "manifest.json").exists()
    assert not list((root / INSTANCE).glob(".deleting-*"))


def test_apply_skips_a_run_dir_that_became_a_symlink_after_planning(tmp_path_factory):
    # Used to rename the link to .deleting-<run> and then fail in rmtree: half-way, the run
    # hidden from every listing.
    root = tmp_path_factory.mktemp("store")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    sealed(root, 1)
    sealed(root, 2)
    plan = plan_retention(Store(root), RetentionMode.KEEP_LAST(0))
    assert ids(plan.reclaim) == [rid(1)]
    link, target = _symlinked(root, 1, elsewhere)
    assert apply_retention(plan) == []
    assert link.is_symlink()
    assert (target / "manifest.json").exists()
    assert not list((root / INSTANCE).glob(".deleting-*"))
