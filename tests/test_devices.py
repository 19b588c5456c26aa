"""Fleet device lists: plain lists, CSV exports, and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.cli.devices import DeviceListError, device_list, read_devices_file


def test_plain_list_with_comments_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "hold.txt"
    path.write_text("# legal hold 2026-17\n1001\n\n1002  # laptop\n1001\n", encoding="utf-8")
    assert read_devices_file(path) == [1001, 1002, 1001]
    assert device_list(["1003"], [path]) == [1003, 1001, 1002]


def test_csv_export_with_device_column(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(
        "\ufeffName,Device_ID,OS\nFIN-WS-1,1001,Windows 10\n,,\nFIN-WS-2,1002,Windows 11\n",
        encoding="utf-8",
    )
    assert read_devices_file(path) == [1001, 1002]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1001\nabc\n", r"hold\.txt:2: 'abc' is not a device id"),
        ("1001\n0\n", r"hold\.txt:2: '0' is not a device id"),
        ("name,os\nx,y\n", r"hold\.txt:1: no device column"),
        ("device,os\n1001,w\nnope,w\n", r"hold\.txt:3: 'nope' is not a device id"),
    ],
)
def test_bad_lists_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hold.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DeviceListError, match=message):
        read_devices_file(path)


def test_no_devices_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DeviceListError, match="no device given"):
        device_list([], [])
    with pytest.raises(DeviceListError, match="cannot read"):
        read_devices_file(tmp_path / "missing.txt")
