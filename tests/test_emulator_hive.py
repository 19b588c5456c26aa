"""build_hive output checked against regipy (an independent parser) and raw struct reads."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from regipy.registry import NKRecord, RegistryHive

from emulator.hive import HiveKey, HiveValue, build_hive

T0 = datetime(2024, 1, 1, tzinfo=UTC)  # FILETIME 133485408000000000
FT0 = 133_485_408_000_000_000
FILE_NAME = "\\??\\C:\\Windows\\System32\\config\\SYSTEM"
BIG = bytes(range(256)) * 400  # 102400 bytes: needs a "db" record with 7 segments
LONG_TEXT = "x" * 20_000  # 40002 bytes of UTF-16: a big-data REG_SZ

VALUES = (
    HiveValue("", "REG_SZ", "default data"),
    HiveValue("Text", "REG_SZ", "hello world"),
    HiveValue("Empty", "REG_SZ", ""),
    HiveValue("Path", "REG_EXPAND_SZ", "%SystemRoot%\\system32\\drivers"),
    HiveValue("Multi", "REG_MULTI_SZ", ["one", "two", "three"]),
    HiveValue("NoItems", "REG_MULTI_SZ", []),
    HiveValue("Start", "REG_DWORD", 0xDEADBEEF),
    HiveValue("Zero", "REG_DWORD", 0),
    HiveValue("Quad", "REG_QWORD", 0x0123456789ABCDEF),
    HiveValue("Tiny", "REG_BINARY", b"\x01\x02\x03"),
    HiveValue("Blob", "REG_BINARY", bytes(range(200))),
    HiveValue("Big", "REG_BINARY", BIG),
    HiveValue("LongText", "REG_SZ", LONG_TEXT),
    HiveValue("Nothing", "REG_NONE", b""),
    HiveValue("名前", "REG_SZ", "値"),
)


def _ts(minute: int, micro: int = 0) -> datetime:
    return datetime(2023, 6, 15, 8, minute, 30, micro, tzinfo=UTC)


def _tree() -> HiveKey:
    many = tuple(HiveKey(f"Sub{i:03d}", _ts(5)) for i in range(599, -1, -1))
    return HiveKey(
        "ROOT",
        _ts(0),
        subkeys=(
            HiveKey("ControlSet001", _ts(1, 123_456), VALUES),
            HiveKey("Ключ", _ts(2), (HiveValue("Wert", "REG_DWORD", 7),)),
            HiveKey("日本語", _ts(3), subkeys=(HiveKey("下", _ts(4)),)),
            HiveKey("Café", _ts(4), (HiveValue("Größe", "REG_SZ", "groß"),)),
            HiveKey("Many", _ts(5), subkeys=many),
            HiveKey("beta", _ts(6)),
            HiveKey("Alpha", _ts(7)),
        ),
    )


def _filetime(when: datetime) -> int:
    return int((when - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds()) * 10**7 + (
        when.microsecond * 10
    )


@pytest.fixture(scope="module")
def hive_bytes() -> bytes:
    return build_hive(_tree(), file_name=FILE_NAME, when=T0)


@pytest.fixture()
def hive(hive_bytes: bytes, tmp_path: Path) -> RegistryHive:
    path = tmp_path / "system.hiv"
    path.write_bytes(hive_bytes)
    return RegistryHive(str(path))


def _child(key: NKRecord, raw_name: bytes) -> NKRecord:
    (found,) = [k for k in key.iter_subkeys() if k.header.key_name_string == raw_name]
    return found


def _cell(data: bytes, offset: int) -> tuple[int, bytes]:
    """(signed size, payload) of the cell at hive offset `offset`."""
    (size,) = struct.unpack_from("<i", data, 4096 + offset)
    return size, data[4096 + offset + 4 : 4096 + offset + abs(size)]


def test_base_block(hive_bytes: bytes) -> None:
    fields = struct.unpack_from("<4sIIQIIIIIII", hive_bytes, 0)
    assert fields == (b"regf", 1, 1, FT0, 1, 5, 0, 1, 0x20, len(hive_bytes) - 4096, 1)
    name = hive_bytes[48:112].decode("utf-16-le")
    assert name == FILE_NAME[-32:]
    xor = 0
    for (word,) in struct.iter_unpack("<I", hive_bytes[:508]):
        xor ^= word
    assert struct.unpack_from("<I", hive_bytes, 508)[0] == xor
    assert xor not in (0, 0xFFFFFFFF)
    assert hive_bytes[512:4096] == bytes(3584)


def test_short_file_name_is_nul_padded() -> None:
    data = build_hive(HiveKey("R", T0), file_name="SYSTEM", when=T0)
    assert data[48:112] == "SYSTEM".encode("utf-16-le").ljust(64, b"\0")
    assert len(data) == 4096 + 4096


def test_bins_and_cells_tile_exactly(hive_bytes: bytes) -> None:
    pos, bins = 4096, 0
    while pos < len(hive_bytes):
        sig, offset, size = struct.unpack_from("<4sII", hive_bytes, pos)
        assert (sig, offset) == (b"hbin", pos - 4096)
        assert size % 4096 == 0 and size > 0
        cell, free = pos + 32, []
        while cell < pos + size:
            (cell_size,) = struct.unpack_from("<i", hive_bytes, cell)
            assert cell_size != 0 and abs(cell_size) % 8 == 0
            free.append(cell_size > 0)
            cell += abs(cell_size)
        assert cell == pos + size
        assert not any(free[:-1])  # only the tail of a bin is free
        pos, bins = pos + size, bins + 1
    assert pos == len(hive_bytes)
    assert bins > 1
    first_bin_stamp = struct.unpack_from("<Q", hive_bytes, 4096 + 20)[0]
    assert first_bin_stamp == FT0


def test_root_key(hive: RegistryHive) -> None:
    root = hive.root
    assert root.name == "ROOT"
    assert root.header.flags.KEY_HIVE_ENTRY
    assert root.header.flags.KEY_COMP_NAME
    assert root.header.last_modified == _filetime(_ts(0))
    assert hive.name == FILE_NAME[-32:]


def test_subkeys_sorted_like_windows(hive: RegistryHive) -> None:
    names = [k.name for k in hive.root.iter_subkeys()]
    # Upper-cased UTF-16 order; the Latin-1 "Café" is read by regipy as ASCII (see below).
    assert names == ["Alpha", "beta", "Caf\ufffd", "ControlSet001", "Many", "Ключ", "日本語"]


def test_timestamps(hive: RegistryHive) -> None:
    stamps = {k.header.key_name_string: k.header.last_modified for k in hive.root.iter_subkeys()}
    assert stamps[b"ControlSet001"] == _filetime(_ts(1, 123_456))
    assert stamps[b"ControlSet001"] == 133_312_896_901_234_560
    assert stamps["Ключ".encode("utf-16-le")] == _filetime(_ts(2))
    assert stamps[b"Caf\xe9"] == _filetime(_ts(4))
    by_path = {k.path: k.timestamp for k in hive.recurse_subkeys(fetch_values=False)}
    assert by_path["\\ControlSet001"] == datetime(2023, 6, 15, 8, 1, 30, 123_456, tzinfo=UTC)
    assert by_path["\\Many\\Sub042"] == _ts(5)


def test_non_ascii_key_names(hive: RegistryHive) -> None:
    cyrillic = hive.get_key("\\Ключ")
    assert not cyrillic.header.flags.KEY_COMP_NAME
    assert cyrillic.header.key_name_string == "Ключ".encode("utf-16-le")
    assert cyrillic.get_value("Wert") == 7
    nested = hive.get_key("\\日本語\\下")
    assert nested.name == "下"
    assert nested.header.last_modified == _filetime(_ts(4))


def test_latin1_names_are_compressed(hive: RegistryHive, hive_bytes: bytes) -> None:
    # Windows stores Latin-1 names one byte per character; regipy decodes those bytes as
    # ASCII, so check the raw bytes instead of regipy's decoded name.
    cafe = _child(hive.root, b"Caf\xe9")
    assert cafe.header.flags.KEY_COMP_NAME
    (vk_offset,) = struct.unpack("<I", _cell(hive_bytes, cafe.header.values_list_offset)[1][:4])
    _, vk = _cell(hive_bytes, vk_offset)
    name_len, data_size, _, kind, flags = struct.unpack_from("<HIIIH", vk, 2)
    assert vk[20 : 20 + name_len] == "Größe".encode("latin-1")
    assert (data_size, kind, flags) == (10, 1, 1)


def test_every_value_round_trips(hive: RegistryHive) -> None:
    control_set = hive.get_key("\\ControlSet001")
    got = [(v.name, v.value_type, v.value) for v in control_set.iter_values(trim_values=False)]
    assert got == [
        ("(default)", "REG_SZ", "default data"),
        ("Text", "REG_SZ", "hello world"),
        ("Empty", "REG_SZ", ""),
        ("Path", "REG_EXPAND_SZ", "%SystemRoot%\\system32\\drivers"),
        ("Multi", "REG_MULTI_SZ", ["one", "two", "three"]),
        ("NoItems", "REG_MULTI_SZ", []),
        ("Start", "REG_DWORD", 0xDEADBEEF),
        ("Zero", "REG_DWORD", 0),
        ("Quad", "REG_QWORD", 0x0123456789ABCDEF),
        ("Tiny", "REG_BINARY", b"\x01\x02\x03"),
        ("Blob", "REG_BINARY", bytes(range(200))),
        ("Big", "REG_BINARY", BIG),
        ("LongText", "REG_SZ", LONG_TEXT),
        ("Nothing", "REG_NONE", b""),
        ("名前", "REG_SZ", "値"),
    ]


def test_raw_value_encodings(hive: RegistryHive, hive_bytes: bytes) -> None:
    control_set = hive.get_key("\\ControlSet001")
    _, vk_list = _cell(hive_bytes, control_set.header.values_list_offset)
    records = {}
    for (vk_offset,) in struct.iter_unpack("<I", vk_list[: 4 * len(VALUES)]):
        _, vk = _cell(hive_bytes, vk_offset)
        name_len, size, data_offset, kind = struct.unpack_from("<HIII", vk, 2)
        records[vk[20 : 20 + name_len]] = (size, data_offset, kind)
    assert records[b"Empty"] == (0x80000002, 0, 1)  # just the UTF-16 NUL, inline
    assert records[b"NoItems"] == (0x80000004, 0, 7)  # double NUL, inline
    assert records[b"Start"] == (0x80000004, 0xDEADBEEF, 4)
    assert records[b"Tiny"] == (0x80000003, 0x030201, 3)
    assert records[b"Nothing"] == (0x80000000, 0, 0)
    multi = _cell(hive_bytes, records[b"Multi"][1])[1]
    assert records[b"Multi"][0] == 30
    assert multi[:30] == "one\0two\0three\0\0".encode("utf-16-le")
    quad = _cell(hive_bytes, records[b"Quad"][1])[1]
    assert (records[b"Quad"][0], quad[:8]) == (8, bytes.fromhex("efcdab8967452301"))
    text = _cell(hive_bytes, records[b"Text"][1])[1]
    assert text[:24] == "hello world\0".encode("utf-16-le")


def test_big_data_record(hive: RegistryHive, hive_bytes: bytes) -> None:
    control_set = hive.get_key("\\ControlSet001")
    _, vk_list = _cell(hive_bytes, control_set.header.values_list_offset)
    vk_offset = struct.unpack_from("<I", vk_list, 4 * 11)[0]
    _, vk = _cell(hive_bytes, vk_offset)
    assert vk[20:23] == b"Big"
    size, db_offset = struct.unpack_from("<II", vk, 4)
    assert size == 102400
    sig, count, seg_list_offset = struct.unpack_from("<2sHI", _cell(hive_bytes, db_offset)[1])
    assert (sig, count) == (b"db", 7)
    segments = struct.unpack_from("<7I", _cell(hive_bytes, seg_list_offset)[1])
    joined = b"".join(_cell(hive_bytes, off)[1][:16344] for off in segments)
    assert joined[:102400] == BIG
    # Windows allocates every segment full size, the last one included.
    assert [_cell(hive_bytes, off)[0] for off in segments] == [-16352] * 7


def test_large_subkey_list(hive: RegistryHive, hive_bytes: bytes) -> None:
    many = hive.get_key("\\Many")
    assert many.subkey_count == 600
    assert [k.name for k in many.iter_subkeys()] == [f"Sub{i:03d}" for i in range(600)]
    sig, count = struct.unpack_from("<2sH", _cell(hive_bytes, many.header.subkeys_list_offset)[1])
    assert (sig, count) == (b"lh", 600)
    assert many.header.largest_sk_name == 12  # "Sub000" as UTF-16 bytes


def test_lh_hashes(hive: RegistryHive, hive_bytes: bytes) -> None:
    _, leaf = _cell(hive_bytes, hive.root.header.subkeys_list_offset)
    sig, count = struct.unpack_from("<2sH", leaf)
    entries = list(struct.iter_unpack("<II", leaf[4 : 4 + 8 * count]))
    assert sig == b"lh"
    assert [entry[1] for entry in entries[:3]] == [
        _lh_hash("ALPHA"),
        _lh_hash("BETA"),
        _lh_hash("CAFÉ"),
    ]
    assert _lh_hash("A") == 65
    assert _lh_hash("ALPHA") == 125_782_342


def _lh_hash(upper: str) -> int:
    value = 0
    for char in upper:
        value = (value * 37 + ord(char)) & 0xFFFFFFFF
    return value


def test_index_root_beyond_one_leaf(tmp_path: Path) -> None:
    root = HiveKey("R", T0, subkeys=tuple(HiveKey(f"K{i:04d}", T0) for i in range(1100)))
    data = build_hive(root, file_name="x", when=T0)
    path = tmp_path / "ri.hiv"
    path.write_bytes(data)
    parsed = RegistryHive(str(path)).root
    assert [k.name for k in parsed.iter_subkeys()] == [f"K{i:04d}" for i in range(1100)]
    sig, leaves = struct.unpack_from("<2sH", _cell(data, parsed.header.subkeys_list_offset)[1])
    assert (sig, leaves) == (b"ri", 2)


def test_security_cell(hive: RegistryHive, hive_bytes: bytes) -> None:
    info = hive.root.get_security_key_info()
    assert (info["owner"], info["group"], info["sacl"]) == ("S-1-5-32-544", "S-1-5-18", None)
    assert [ace["sid"] for ace in info["dacl"]] == ["S-1-5-18", "S-1-5-32-544", "S-1-5-32-545"]
    sk_offset = hive.root.header.security_key_offset
    sig, _, flink, blink, refs = struct.unpack_from("<2sHIII", _cell(hive_bytes, sk_offset)[1])
    total_keys = 1 + 7 + 1 + 600
    assert (sig, flink, blink, refs) == (b"sk", sk_offset, sk_offset, total_keys)
    assert hive.get_key("\\Many\\Sub123").header.security_key_offset == sk_offset


def test_deterministic() -> None:
    first = build_hive(_tree(), file_name=FILE_NAME, when=T0)
    second = build_hive(_tree(), file_name=FILE_NAME, when=T0)
    assert first == second
    later = build_hive(_tree(), file_name=FILE_NAME, when=_ts(9))
    assert later != first and len(later) == len(first)


@pytest.mark.parametrize(
    ("root", "error"),
    [
        (HiveKey("R", datetime(2024, 1, 1)), ValueError),  # naive timestamp
        (HiveKey("R", T0, subkeys=(HiveKey("a", T0), HiveKey("A", T0))), ValueError),
        (HiveKey("R", T0, (HiveValue("v", "REG_DWORD", "1"),)), TypeError),
        (HiveKey("R", T0, (HiveValue("v", "REG_LINK", b""),)), ValueError),
        (HiveKey("R", T0, (HiveValue("v", "REG_MULTI_SZ", ["a", ""]),)), ValueError),
    ],
)
def test_rejects_invalid_trees(root: HiveKey, error: type[Exception]) -> None:
    with pytest.raises(error):
        build_hive(root, file_name="x", when=T0)
