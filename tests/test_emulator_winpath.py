"""Windows name rules of the emulator's disks: 8.3 short names, NTFS index order, and paths
made absolute against a working directory."""

from __future__ import annotations

import pytest

from emulator.winpath import BadPath, absolute_path, fits_8_3, ntfs_order, short_name


@pytest.mark.parametrize(
    "name",
    [
        "Windows",
        "notes.txt",
        "Desktop",
        "README.TXT",
        "a",
        "x.y",
        "MixedCa.Se",
        "$Recycle",
        "~$a.doc",
    ],
)
def test_names_that_fit_8_3_in_any_case_get_no_short_name(name: str) -> None:
    assert fits_8_3(name)
    assert short_name(name, set()) == ""


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("Program Files", "PROGRA~1"),
        ("Program Files (x86)", "PROGRA~1"),  # the first free one in a folder of its own
        ("Hidden Report.docx", "HIDDEN~1.DOC"),
        ("CMD.EXE-0BD30981.pf", "CMDEXE~1.PF"),
        ("notes.text", "NOTES~1.TEX"),  # extension longer than 3
        ("LongerName.txt", "LONGER~1.TXT"),  # stem longer than 8
        ("a.b.c", "AB~1.C"),  # two dots
        ("my file", "MYFILE~1"),  # a space
        ("a+b.txt", "AB~1.TXT"),  # + is not a short-name character
    ],
)
def test_names_that_do_not_fit_8_3_get_one(name: str, short: str) -> None:
    assert not fits_8_3(name)
    assert short_name(name, set()) == short


@pytest.mark.parametrize("name", ["café.txt", ".gitignore", "x.", "abc.d e"])
def test_other_names_that_do_not_fit_8_3(name: str) -> None:
    """Non-ASCII, no stem, an empty extension, a space in the extension."""
    assert not fits_8_3(name)
    short = short_name(name, set())
    assert "~1" in short and fits_8_3(short)


def test_short_names_count_past_the_ones_taken() -> None:
    assert short_name("Program Files (x86)", {"PROGRA~1"}) == "PROGRA~2"
    assert short_name("Program Files (x86)", {"PROGRA~1", "PROGRA~2"}) == "PROGRA~3"


def test_ntfs_order_is_upcased_utf16() -> None:
    names = ["b", "a_b", "aZ", "A", "\uff41", "\U0001f600", "é"]
    assert sorted(names, key=ntfs_order) == ["A", "aZ", "a_b", "b", "é", "\U0001f600", "\uff41"]
    assert ntfs_order("ALICE") == ntfs_order("alice")
    assert ntfs_order("ß") != ntfs_order("SS")  # no case mapping that changes the length


@pytest.mark.parametrize(
    ("path", "cwd", "absolute"),
    [
        ("notes.txt", "C:\\Users\\alice", "C:\\Users\\alice\\notes.txt"),
        ("..\\bob\\x", "C:\\Users\\alice", "C:\\Users\\bob\\x"),
        ("D:\\x", "C:\\Users\\alice", "D:\\x"),
        ("\\Windows", "D:\\data", "D:\\Windows"),
        ("C:x.txt", "C:\\Users\\alice", "C:\\Users\\alice\\x.txt"),  # drive-relative
        ("D:x.txt", "C:\\Users\\alice", "D:\\x.txt"),
        ("c:/Users/./alice/", "C:\\", "C:\\Users\\alice"),
        ("\\\\?\\C:\\a\\..\\b", "C:\\Users", "\\\\?\\C:\\a\\..\\b"),  # verbatim: untouched
    ],
)
def test_absolute_path(path: str, cwd: str, absolute: str) -> None:
    assert absolute_path(path, cwd) == absolute


@pytest.mark.parametrize("path", ["", "a\x00b", "\\\\server\\share\\x"])
def test_absolute_path_refuses_what_win32_refuses(path: str) -> None:
    with pytest.raises(BadPath):
        absolute_path(path, "C:\\Windows")
