from __future__ import annotations

import sys

import pytest

from collector.transfer.gil import COLLECTING_SWITCH_INTERVAL, short_switch_interval


def test_the_switch_interval_is_short_inside_and_restored_after() -> None:
    before = sys.getswitchinterval()
    with short_switch_interval():
        assert sys.getswitchinterval() == pytest.approx(
            min(before, COLLECTING_SWITCH_INTERVAL), abs=2e-6
        )
    assert sys.getswitchinterval() == before


def test_it_is_restored_after_an_error_and_never_lengthened() -> None:
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), short_switch_interval(before * 10):
        assert sys.getswitchinterval() == before
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == before


def test_overlapping_uses_restore_the_original_interval_only_at_the_last_exit() -> None:
    before = sys.getswitchinterval()
    first = short_switch_interval()
    second = short_switch_interval()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(
        min(before, COLLECTING_SWITCH_INTERVAL), abs=2e-6
    )
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before
