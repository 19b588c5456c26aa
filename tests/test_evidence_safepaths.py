"""Safe member names for attacker-controlled remote paths (property and table tests)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evidence.safepaths import (
    MemberNamer,
    collision_key,
    is_safe_member_name,
    safe_relative_path,
)


def tag(original: str) -> str:
    return "~" + hashlib.sha256(original.encode()).hexdigest()[:8]


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("C:\\Windows\\Prefetch\\CMD.EXE-0BD30981.pf", "C/Windows/Prefetch/CMD.EXE-0BD30981.pf"),
        ("c:/Users/alice/notes.txt", "C/Users/alice/notes.txt"),
        ("\\\\fileserver\\share\\x.doc", "UNC/fileserver/share/x.doc"),
        ("\\\\?\\C:\\Windows\\x", "C/Windows/x"),
        ("\\\\?\\UNC\\srv\\s\\y", "UNC/srv/s/y"),
        ("C:\\a\\..\\..\\etc\\passwd", f"C/a/__{tag('..')}/__{tag('..')}/etc/passwd"),
        ("C:\\x\\file.txt:secret", f"C/x/file.txt_secret{tag('file.txt:secret')}"),
        ("C:\\dev\\CON", f"C/dev/_CON{tag('CON')}"),
        ("C:\\dev\\nul.txt", f"C/dev/_nul.txt{tag('nul.txt')}"),
        ("C:\\dev\\COM1", f"C/dev/_COM1{tag('COM1')}"),
        ("C:\\t\\name. ", f"C/t/name_{tag('name. ')}"),
        ("C:\\t\\a\x00b\x07", f"C/t/a_b_{tag(chr(0).join(['a', 'b' + chr(7)]))}"),
        ("HKLM\\SOFTWARE\\Run", "HKLM/SOFTWARE/Run"),
        ("", f"_{tag('')}"),
    ],
)
def test_known_remote_paths_map_to_exact_safe_paths(remote: str, expected: str) -> None:
    assert safe_relative_path(remote) == expected
    assert is_safe_member_name(expected)


def test_long_component_is_cut_below_255_bytes_with_a_tag() -> None:
    name = "é" * 300
    result = safe_relative_path("C:\\" + name)
    component = result.split("/")[1]
    assert len(component.encode()) <= 255
    assert component.endswith(tag(name))


def test_namer_separates_case_and_normalisation_collisions_deterministically() -> None:
    remotes = ["C:\\a\\Café", "C:\\A\\CAFE\u0301", "C:\\a\\café", "C:\\a\\Café\\inner"]
    first = [MemberNamer().place(r) for r in remotes[:1]]
    namer = MemberNamer()
    placed = [namer.place(remote) for remote in remotes]
    assert placed[0] == first[0] == "artifacts/C/a/Café"
    assert placed[1] == "artifacts/C/A/CAF\u00c9" + tag("CAFE\u0301")
    assert placed[2] == "artifacts/C/a/café~2"
    assert len({collision_key(p) for p in placed}) == 4
    replay = MemberNamer()
    assert [replay.place(remote) for remote in remotes] == placed


hostile = st.lists(
    st.sampled_from([*'\\/.:aAbB \x00\x01\u202e\u0301é?*<>|"~ﬁ', "\ud800", "COM1", "..", "CON"]),
    max_size=40,
).map("".join) | st.text(max_size=300)


@settings(max_examples=400, deadline=None)
@given(hostile)
def test_any_remote_path_becomes_a_safe_relative_path(remote: str) -> None:
    result = safe_relative_path(remote)
    assert result == safe_relative_path(remote)
    assert is_safe_member_name(result)
    parts = result.split("/")
    assert all(part not in ("", ".", "..") for part in parts)
    assert all(len(part.encode()) <= 255 for part in parts)
    assert not any(ord(char) < 32 for char in result)
    assert ":" not in result and "\\" not in result


@settings(max_examples=200, deadline=None)
@given(st.lists(hostile, max_size=20))
def test_namer_gives_unique_names_that_never_nest_under_a_file(remotes: list[str]) -> None:
    namer = MemberNamer()
    placed = [namer.place(remote) for remote in remotes]
    keys = [collision_key(path) for path in placed]
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert not any(key.startswith(other + "/") for other in keys)
    assert all(is_safe_member_name(path) and path.startswith("artifacts/") for path in placed)


def test_a_renamed_long_name_stays_within_the_component_limit() -> None:
    """Found by hypothesis: two 199-byte names; the second became 201 bytes with its ``~2``,
    a member name the verifier itself refuses."""
    namer = MemberNamer()
    first, second = (namer.place("0" * 199) for _ in range(2))
    assert second.rsplit("/", 1)[-1] == "0" * 198 + "~2"
    assert is_safe_member_name(first) and is_safe_member_name(second)
