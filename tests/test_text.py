"""Plain-text renderings shared by the CLIs (issue 12 #5: times from integers)."""

from __future__ import annotations

import pytest

from mmaplog.cli.text import format_ns
from tui.formatting import format_ts


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (1_700_000_000_542_453_460, "2023-11-14T22:13:20.542453Z"),  # a float rounds it to 454
        (1_700_000_000_999_999_999, "2023-11-14T22:13:20.999999Z"),  # not the next second
        (0, "1970-01-01T00:00:00.000000Z"),
        (None, "-"),
    ],
)
def test_format_ns_truncates_to_microseconds_from_integers(ns, text):
    assert format_ns(ns) == text


def test_the_cli_and_the_tui_print_the_same_microseconds():
    ns = 1_700_000_000_542_453_460
    assert format_ns(ns)[11:26] == format_ts(ns)[11:26]
