"""Halt reasons, the error → halt mapping and the HaltSignal latch (checklist 11.1, 4.7)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

import mmaplog
from mmaplog import (
    BackendCorrupted,
    BackendDisk,
    BackpressureStall,
    ChecksumMismatchError,
    CorruptionError,
    DiskError,
    HaltBackendError,
    HaltReason,
    HaltSignal,
    LogClosedError,
    OutOfOrderError,
    halt_reason_from_error,
    noop_halt,
)


def test_disk_error_maps_to_backend_disk():
    assert halt_reason_from_error(DiskError("disk full")) == BackendDisk("disk full")


@pytest.mark.parametrize("error", [CorruptionError("bad page"), ChecksumMismatchError("bad page")])
def test_corruption_errors_map_to_backend_corrupted(error):
    assert halt_reason_from_error(error) == BackendCorrupted("bad page")


@pytest.mark.parametrize(
    "error",
    [LogClosedError("run is sealed"), OutOfOrderError(3, 7), RuntimeError("boom")],
)
def test_any_other_error_maps_to_backend_error_with_its_message(error):
    assert halt_reason_from_error(error) == HaltBackendError(str(error))


def test_an_error_without_a_message_is_named_by_its_class():
    assert halt_reason_from_error(RuntimeError()) == HaltBackendError("RuntimeError")


def test_the_uncommitted_count_is_carried_into_the_reason():
    assert halt_reason_from_error(DiskError("full"), 7).uncommitted == 7
    assert halt_reason_from_error(CorruptionError("x"), 2).uncommitted == 2
    assert halt_reason_from_error(ValueError("x"), 3).uncommitted == 3


def test_halt_reasons_are_frozen_values():
    reason = BackpressureStall(stalled_for=0.3, threshold=0.25)
    assert reason == BackpressureStall(0.3, 0.25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        reason.threshold = 1.0  # type: ignore[misc]


def test_the_halt_backend_error_is_a_value_distinct_from_the_exception():
    assert HaltBackendError is not mmaplog.BackendError
    assert not issubclass(HaltBackendError, BaseException)
    assert HaltBackendError("x").uncommitted == 0


def test_noop_halt_ignores_every_reason():
    for reason in (BackpressureStall(1.0, 0.5), BackendDisk("x"), HaltBackendError("y")):
        assert noop_halt(reason) is None


def test_a_capturing_callback_receives_the_reason_it_was_called_with():
    received: list[HaltReason] = []
    callback: mmaplog.HaltCallback = received.append
    callback(BackendCorrupted("torn"))
    assert received == [BackendCorrupted("torn")]


def test_a_fresh_signal_is_not_halted_and_has_no_reason():
    signal = HaltSignal()
    assert not signal.is_halted
    assert signal.reason is None
    assert not signal.wait(0)


def test_the_first_reason_wins_and_reading_it_does_not_clear_it():
    signal = HaltSignal()
    callback = signal.callback()
    callback(BackpressureStall(0.3, 0.25))
    callback(BackendDisk("disk full"))
    assert signal.is_halted
    assert signal.reason == BackpressureStall(0.3, 0.25)
    assert signal.reason == BackpressureStall(0.3, 0.25)


def test_rearm_clears_the_flag_and_the_reason_for_the_next_run():
    signal = HaltSignal()
    signal.callback()(BackendDisk("disk full"))
    signal.rearm()
    assert not signal.is_halted
    assert signal.reason is None
    signal.callback()(HaltBackendError("later"))
    assert signal.reason == HaltBackendError("later")


def test_wait_returns_once_another_thread_halts():
    signal = HaltSignal()
    timer = threading.Timer(0.01, signal.callback(), args=(BackendDisk("x"),))
    timer.start()
    assert signal.wait(5)
    timer.join()


def test_a_poller_never_sees_halted_without_a_reason():
    signal = HaltSignal()
    callback = signal.callback()
    seen_without_reason = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            if signal.is_halted and signal.reason is None:
                seen_without_reason.append(True)

    poller = threading.Thread(target=poll)
    poller.start()
    for _ in range(200):
        callback(BackendDisk("x"))
        signal.rearm()
    stop.set()
    poller.join()
    assert not seen_without_reason


def test_concurrent_halts_store_exactly_one_of_the_reasons():
    signal = HaltSignal()
    callback = signal.callback()
    reasons = [HaltBackendError(str(n)) for n in range(8)]
    threads = [threading.Thread(target=callback, args=(r,)) for r in reasons]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert signal.reason in reasons


def test_repr_shows_the_state():
    signal = HaltSignal()
    signal.callback()(BackendDisk("x"))
    assert "is_halted=True" in repr(signal)
    assert "BackendDisk" in repr(signal)
