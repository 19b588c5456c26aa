"""The .reg export matches what ``regedit /e`` writes, byte for byte."""

from __future__ import annotations

from collector.acquisition.regexport import (
    ExportedKey,
    encode_reg,
    full_key_path,
    render_reg,
    render_value,
)
from collector.liveresponse.models import RegistryValue


def test_roots_are_spelled_out() -> None:
    assert full_key_path("HKLM\\SOFTWARE\\Microsoft") == "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft"
    assert full_key_path("hku\\S-1-5-18") == "HKEY_USERS\\S-1-5-18"
    assert full_key_path("HKEY_CURRENT_USER") == "HKEY_CURRENT_USER"


def test_value_forms() -> None:
    assert render_value(RegistryValue("REG_SZ", "", "x")) == '@="x"'
    assert render_value(RegistryValue("REG_SZ", 'a"b', "C:\\x")) == '"a\\"b"="C:\\\\x"'
    assert render_value(RegistryValue("REG_DWORD", "Start", 2)) == '"Start"=dword:00000002'
    assert render_value(RegistryValue("REG_DWORD", "Neg", -1)) == '"Neg"=dword:ffffffff'
    assert render_value(RegistryValue("REG_QWORD", "Q", 1)) == '"Q"=hex(b):01,00,00,00,00,00,00,00'
    assert render_value(RegistryValue("REG_BINARY", "B", b"\x01\xff")) == '"B"=hex:01,ff'
    assert render_value(RegistryValue("REG_BINARY", "E", b"")) == '"E"=hex:'
    assert render_value(RegistryValue("REG_MULTI_SZ", "M", ["a", "b"])) == (
        '"M"=hex(7):61,00,00,00,62,00,00,00,00,00'
    )
    assert render_value(RegistryValue("REG_NONE", "N", b"")) == '"N"=hex(0):'


def test_long_values_wrap_like_regedit() -> None:
    # regedit /e output for Path=%SystemRoot%\system32\... : 21 pairs on the first line,
    # 25 on each continuation line, each line ending in "\".
    value = RegistryValue("REG_EXPAND_SZ", "Path", "%SystemRoot%\\system32\\WindowsPowerShell")
    lines = render_value(value).split("\r\n")
    assert lines[0] == (
        '"Path"=hex(2):25,00,53,00,79,00,73,00,74,00,65,00,6d,00,52,00,6f,00,6f,00,74,\\'
    )
    assert lines[1] == (
        "  00,25,00,5c,00,73,00,79,00,73,00,74,00,65,00,6d,00,33,00,32,00,5c,00,57,00,\\"
    )
    assert all(len(line) <= 80 for line in lines)
    joined = "".join(line.rstrip("\\").strip() for line in lines)
    hex_pairs = joined.split(":", 1)[1].split(",")
    assert bytes(int(p, 16) for p in hex_pairs) == (value.value_data + "\0").encode("utf-16-le")


def test_file_is_utf16_with_bom_and_crlf() -> None:
    text = render_reg(
        [ExportedKey("HKLM\\SOFTWARE\\Run", [RegistryValue("REG_SZ", "Updater", "u.exe")])]
    )
    assert text == (
        "Windows Registry Editor Version 5.00\r\n\r\n"
        "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Run]\r\n"
        '"Updater"="u.exe"\r\n\r\n'
    )
    data = encode_reg(text)
    assert data[:2] == b"\xff\xfe"
    assert data[2:].decode("utf-16-le") == text
