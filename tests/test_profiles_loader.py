"""Profile language: loading, precise validation errors, includes, the built-in library."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles import (
    FileArtifact,
    ProcessesArtifact,
    Profile,
    ProfileError,
    RegistryArtifact,
    builtin_library,
    dump_profile,
    load_profile_file,
    load_profile_text,
    resolve,
)
from profiles.library import Library

GOOD = r"""
name: custom
description: A test profile.
include: [minimal]
artifacts:
  - name: Prefetch
    category: execution
    kind: file
    path: '%SystemRoot%\Prefetch\*.pf'
  - name: Tasks
    kind: file
    path: '%SystemRoot%\System32\Tasks\**\*'
    max_depth: 4
    max_size: 10MiB
  - {name: Services, kind: registry, key: 'HKLM\SYSTEM\CurrentControlSet\Services\*', values: [ImagePath]}
  - {name: SAM, kind: hive, hive: sam}
  - {name: ARP, kind: command, command: arp -a, timeout: 30}
  - {name: Users, kind: listing, path: '%SystemDrive%\Users', max_depth: 2}
"""

BAD = r"""name: 'bad name'
colour: blue
artifacts:
  - name: a
    kind: fil
  - name: b
    kind: file
    path: 'Windows\**\x**'
    locked: maybe
    max_size: 12QB
  - name: c
    kind: registry
    key: HKXX\foo
    values: 3
    path: 'C:\x'
  - [1]
  - name: d
    kind: command
    timeout: -1
  - name: e
    kind: file
    path: 'C:\Windows\%Bad\*.log'
"""

BAD_PROBLEMS = [
    "bad.yaml:1: name: 'bad name' is not a profile name (expected letters, digits, '.', '_' or '-')",
    "bad.yaml:2: colour: unknown field (expected one of name, description, include, artifacts)",
    "bad.yaml:5: artifacts[0].kind: unknown kind 'fil' (expected one of file, registry, hive, memdump, processes, listing, command)",
    "bad.yaml:8: artifacts[1].path: bad pattern 'Windows\\**\\x**': not absolute: start with a drive (C:\\) or a variable (%SystemRoot%) (expected a Windows path pattern)",
    "bad.yaml:8: artifacts[1].path: bad pattern 'Windows\\**\\x**': '**' must be a whole segment, not part of 'x**' (expected a Windows path pattern)",
    "bad.yaml:8: artifacts[1].max_depth: missing for a '**' path (expected max_depth 1..32)",
    "bad.yaml:9: artifacts[1].locked: 'maybe' is not a boolean (expected true or false)",
    "bad.yaml:10: artifacts[1].max_size: '12QB' is not a size (expected a size in bytes, e.g. 4096 or 512MiB)",
    "bad.yaml:13: artifacts[2].key: bad key 'HKXX\\foo': unknown root 'HKXX' (HKLM, HKU, HKCU, HKCR or their long names) (expected a registry key, e.g. HKLM\\SOFTWARE\\...)",
    "bad.yaml:14: artifacts[2].values: '3' is not a list (expected a list of strings)",
    "bad.yaml:15: artifacts[2].path: not a field of kind registry (expected key, recursive, values for registry)",
    "bad.yaml:16: artifacts[3]: a list is not a mapping (expected a mapping with name, kind and the kind's fields)",
    "bad.yaml:17: artifacts[4].command: missing (expected a command line, e.g. ipconfig /all)",
    "bad.yaml:19: artifacts[4].timeout: -1 is out of range (expected 0 < seconds <= 86400)",
    "bad.yaml:22: artifacts[5].path: bad pattern 'C:\\Windows\\%Bad\\*.log': a lone '%': write %Name% for a variable, %% for a literal '%' (expected a Windows path pattern)",
]


def test_good_profile_loads_with_typed_fields() -> None:
    profile = load_profile_text(GOOD, "good.yaml")
    assert profile.name == "custom"
    assert profile.includes == ("minimal",)
    assert profile.include_lines == (4,)
    tasks, services, sam = profile.artifacts[1], profile.artifacts[2], profile.artifacts[3]
    assert tasks == FileArtifact(
        name="x", path="%SystemRoot%\\System32\\Tasks\\**\\*", max_depth=4, max_size=10 * 1024**2
    )
    assert tasks.source == "good.yaml:10"
    assert services.to_dict() == {
        "name": "Services",
        "kind": "registry",
        "key": "HKLM\\SYSTEM\\CurrentControlSet\\Services\\*",
        "values": ["ImagePath"],
    }
    assert sam.to_dict() == {"name": "SAM", "kind": "hive", "hive": "SAM"}
    assert [a.kind for a in profile.artifacts] == [
        "file",
        "file",
        "registry",
        "hive",
        "command",
        "listing",
    ]


def test_every_problem_is_reported_with_file_line_field_and_expectation() -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile_text(BAD, "bad.yaml")
    assert [str(p) for p in caught.value.problems] == BAD_PROBLEMS
    assert str(caught.value) == "\n".join(BAD_PROBLEMS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "s: empty document (expected a mapping with name and artifacts)"),
        (
            "[",
            "s:1: not valid YAML: while parsing a flow node expected the node content, but found '<stream end>'",
        ),
        ("- 1", "s:1: a list is not a mapping (expected a mapping with name and artifacts)"),
        ("name: x", "s:1: artifacts: missing (expected a list of artifacts)"),
        (
            "{name: x, artifacts: []}",
            "s:1: artifacts: nothing to collect (expected an artifact or an include)",
        ),
        (
            "name: x\nname: y\nartifacts: [{name: p, kind: processes}]",
            "s:2: name: given twice (expected each field once)",
        ),
        (
            "name: x\nartifacts:\n - {name: p, kind: processes}\n - {name: p, kind: memdump}",
            "s:4: artifacts[1].name: 'p' is already the name of artifacts[0] (expected a name unique in the profile)",
        ),
        (
            "name: x\nartifacts: [{name: p, kind: file, path: 'C:\\x\\*', max_depth: 2}]",
            "s:2: artifacts[0].max_depth: given, but the path has no '**' (expected max_depth only with a '**' segment)",
        ),
        (
            "name: x\nartifacts: [{name: f, kind: file, path: 'C:\\x\\*', max_files: 0}]",
            "s:2: artifacts[0].max_files: 0 is out of range (expected 1..10000000)",
        ),
        (
            "name: x\nartifacts: [{name: h, kind: hive, hive: NOPE}]",
            "s:2: artifacts[0].hive: unknown hive 'NOPE' (expected hive: one of SYSTEM, SOFTWARE, SAM, SECURITY, DEFAULT, COMPONENTS, BCD, AMCACHE, NTUSER, USRCLASS, or path (and key))",
        ),
        (
            "name: x\nartifacts: [{name: f, kind: file, path: 'C:\\a\\..\\b'}]",
            "s:2: artifacts[0].path: bad pattern 'C:\\a\\..\\b': relative segment '..' (expected a Windows path pattern)",
        ),
    ],
)
def test_single_problems(text: str, message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile_text(text, "s")
    assert [str(p) for p in caught.value.problems] == [message]


def test_max_files_defaults_to_a_hundred_thousand_and_can_be_set() -> None:
    text = "name: x\nartifacts:\n - {name: a, kind: file, path: 'C:\\x\\*'}\n"
    text += " - {name: b, kind: file, path: 'C:\\y\\*', max_files: 500}"
    first, second = load_profile_text(text).artifacts
    assert (first.max_files, second.max_files) == (100_000, 500)


def test_literal_percent_is_written_twice() -> None:
    text = "name: x\nartifacts: [{name: f, kind: file, path: '%SystemRoot%\\Logs\\A%%4B.evtx'}]"
    assert load_profile_text(text).artifacts[0].path == "%SystemRoot%\\Logs\\A%%4B.evtx"


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile_file(tmp_path / "missing.yaml")
    assert (
        str(caught.value) == f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"
    )
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"name: \xff\n")
    with pytest.raises(ProfileError) as caught:
        load_profile_file(bad)
    assert str(caught.value) == f"{bad}: not UTF-8 text (byte 6)"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_profile_or_a_profile_error(text: str) -> None:
    try:
        load_profile_text(text, "fuzz")
    except ProfileError as exc:
        assert exc.problems
        assert all(str(p).startswith("fuzz") for p in exc.problems)


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["name", "kind", "path", "key", "x"]), inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "name": yaml_values,
            "include": yaml_values,
            "artifacts": st.lists(
                st.fixed_dictionaries(
                    {
                        "kind": st.sampled_from(
                            ["file", "registry", "hive", "listing", "command", "bogus"]
                        )
                    },
                    optional={
                        "name": yaml_values,
                        "path": st.one_of(st.text(max_size=30), yaml_values),
                        "key": yaml_values,
                        "max_depth": yaml_values,
                        "values": yaml_values,
                        "timeout": yaml_values,
                        "hive": yaml_values,
                    },
                ),
                max_size=4,
            ),
        },
    )
)
def test_structured_fuzz_gives_a_profile_or_a_profile_error(document: dict) -> None:
    text = yaml.safe_dump(document)
    try:
        profile = load_profile_text(text, "fuzz")
    except ProfileError as exc:
        assert exc.problems
        return
    assert load_profile_text(dump_profile(profile), "again").to_dict() == profile.to_dict()


def test_builtin_library_resolves() -> None:
    library = builtin_library()
    assert library.names() == ["legal-hold", "memory", "minimal", "registry-persistence", "triage"]
    counts = {
        name: len(resolve(library.profiles[name], library).artifacts) for name in library.names()
    }
    assert counts == {
        "legal-hold": 6,
        "memory": 2,
        "minimal": 8,
        "registry-persistence": 31,
        "triage": 58,
    }
    triage = resolve(library.profiles["triage"], library)
    assert triage.profiles == ("triage", "registry-persistence", "minimal")
    kinds = {a.kind for a in triage.artifacts}
    assert kinds == {"processes", "command", "registry", "hive", "file"}
    commands = [a.to_dict()["command"] for a in triage.artifacts if a.kind == "command"]
    assert commands == ["ipconfig /all", "netstat -ano"]


def test_builtin_profiles_round_trip_through_yaml() -> None:
    library = builtin_library()
    for profile in library.profiles.values():
        again = load_profile_text(dump_profile(profile, ["a comment"]), "again")
        assert again.to_dict() == profile.to_dict()


def _write(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def test_include_cycle_and_missing_include_name_their_lines(tmp_path: Path) -> None:
    a = _write(tmp_path, "a", "name: a\ninclude:\n  - b\n  - nowhere\nartifacts: []\n")
    _write(tmp_path, "b", "name: b\ninclude: [a]\nartifacts: [{name: p, kind: processes}]\n")
    with pytest.raises(ProfileError) as caught:
        resolve(load_profile_file(a), Library())
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'b.yaml'}:2: include[0]: include cycle a -> b -> a (expected includes that do not lead back)",
        f"{a}:4: include[1]: no profile named 'nowhere' (expected a built-in profile or NAME.yaml beside this file)",
    ]


def test_self_include_is_a_cycle() -> None:
    profile = load_profile_text("name: me\ninclude: [me]\nartifacts: []\n", "me.yaml")
    with pytest.raises(ProfileError) as caught:
        resolve(profile, Library({"me": profile}))
    assert (
        str(caught.value)
        == "me.yaml:2: include[0]: include cycle me -> me (expected includes that do not lead back)"
    )


def test_resolve_flattens_and_deduplicates(tmp_path: Path) -> None:
    top = _write(
        tmp_path,
        "top",
        "name: top\ninclude: [side, minimal]\nartifacts:\n"
        "  - {name: Processes again, kind: processes}\n"
        "  - {name: Run keys (machine), kind: registry, key: 'HKLM\\SOFTWARE\\Other'}\n",
    )
    _write(
        tmp_path,
        "side",
        "name: side\ninclude: [minimal]\nartifacts: [{name: mem, kind: memdump}]\n",
    )
    resolved = resolve(load_profile_file(top), builtin_library())
    assert resolved.profiles == ("top", "side", "minimal")
    names = [a.name for a in resolved.artifacts]
    assert names[:3] == ["Processes again", "Run keys (machine)", "mem"]
    assert len([a for a in resolved.artifacts if isinstance(a, ProcessesArtifact)]) == 1
    runs = [
        a
        for a in resolved.artifacts
        if isinstance(a, RegistryArtifact) and a.name.startswith("Run keys (machine)")
    ]
    assert [(a.name, a.key) for a in runs] == [
        ("Run keys (machine)", "HKLM\\SOFTWARE\\Other"),
        ("Run keys (machine) (minimal)", "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"),
    ]
    assert len(resolved.artifacts) == 3 + 7
    assert resolved.to_dict()["artifacts"][0] == {
        "name": "Processes again",
        "kind": "processes",
        "source": f"{top}:4",
    }


def test_profile_equality_ignores_names() -> None:
    assert Profile(name="p").to_dict() == {"name": "p", "artifacts": []}
    assert FileArtifact(name="a", path="C:\\x") == FileArtifact(name="b", path="C:\\x")
    assert FileArtifact(name="a", path="C:\\x") != FileArtifact(name="a", path="C:\\y")
