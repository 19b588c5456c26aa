"""KAPE and ForensicArtifacts importers, over the libraries responders maintain."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cli_harness import clean_env, run_cli
from conftest import FORMATS_DIR

from collector.cli.main import main
from profiles import FileArtifact, RegistryArtifact, load_profile_file, load_profile_text
from profiles.forensic_artifacts import (
    ForensicArtifacts,
    convert_path,
    expand_braces,
    import_forensic_artifacts,
    survey_forensic_artifacts,
    windows_definitions,
)
from profiles.kape import KapeTargets, convert_mask, import_kape, survey_kape

FORMATS = FORMATS_DIR
TARGETS = FORMATS / "kape" / "Targets"
DEFINITIONS = FORMATS / "forensicartifacts" / "data"

pytestmark = pytest.mark.skipif(not FORMATS.is_dir(), reason=f"{FORMATS} is not here")

RAW_KAPE = {
    "Windows/$MFT.tkape: $MFT",
    "Windows/$LogFile.tkape: $LogFile",
    "Windows/$J.tkape: $J",
    "Windows/$J.tkape: $Max",
    "Windows/$SDS.tkape: $SDS",
    "Windows/$Boot.tkape: $Boot",
    "Windows/$T.tkape: $T",
    "Compound/FileSystem.tkape: $MFT",
    "Compound/FileSystem.tkape: $LogFile",
    "Compound/FileSystem.tkape: $J",
    "Compound/FileSystem.tkape: $SDS",
    "Compound/FileSystem.tkape: $Boot",
    "Compound/FileSystem.tkape: $T",
    "Compound/KapeTriage.tkape: FileSystem",
}


@pytest.fixture(scope="module")
def targets() -> KapeTargets:
    return KapeTargets(TARGETS)


@pytest.fixture(scope="module")
def definitions() -> ForensicArtifacts:
    return ForensicArtifacts.from_directory(DEFINITIONS)


def test_kape_triage(targets: KapeTargets) -> None:
    result = import_kape([TARGETS / "Compound" / "KapeTriage.tkape"], targets)
    assert {item.origin for item in result.not_converted} == RAW_KAPE
    assert {item.category for item in result.not_converted} == {"raw-ntfs"}
    assert (len(result.converted), len(result.not_converted)) == (1232, 18)
    paths = {a.path for a in result.profile.artifacts if isinstance(a, FileArtifact)}
    assert "%SystemDrive%\\Windows\\prefetch\\*.pf" in paths
    assert "%SystemDrive%\\Windows\\System32\\winevt\\logs\\*.evtx" in paths
    assert "%UserProfile%\\NTUSER.DAT*" in paths
    assert len(result.profile.artifacts) == 1071
    assert len({a.name for a in result.profile.artifacts}) == 1071
    recursive = [a for a in result.profile.artifacts if isinstance(a, FileArtifact) and a.max_depth]
    assert all("\\**\\" in a.path and a.max_depth == 16 for a in recursive)
    mft = [a for a in result.profile.artifacts if "$MFT" in getattr(a, "path", "")]
    assert mft == []


def test_kape_registry_hives(targets: KapeTargets) -> None:
    result = import_kape([TARGETS / "Compound" / "RegistryHives.tkape"], targets)
    assert result.not_converted == []
    assert len(result.converted) == 56 + 3  # entries, and the three targets it names
    artifacts = {a.name: a for a in result.profile.artifacts}
    assert len(artifacts) == 55  # the XP and modern NTUSER.DAT entries become one
    assert (
        artifacts["RegistryHivesUser: NTUSER.DAT registry hive XP"].path
        == "%UserProfile%\\NTUSER.DAT*"
    )
    assert (
        artifacts["RegistryHivesSystem: SAM registry hive"].path
        == "%SystemDrive%\\Windows\\System32\\config\\SAM"
    )
    assert (
        artifacts["RegistryHivesSystem: SAM registry hive #2"].path
        == "%SystemDrive%\\Windows.old\\Windows\\System32\\config\\SAM"
    )
    assert (
        artifacts["RegistryHivesUser: UsrClass.dat registry hive"].path
        == "%UserProfile%\\AppData\\Local\\Microsoft\\Windows\\UsrClass.dat*"
    )
    again = load_profile_text(_dump(result), "imported")
    assert again.to_dict() == result.profile.to_dict()


def _dump(result) -> str:
    from profiles import dump_profile

    return dump_profile(result.profile)


def test_kape_percent_in_file_names_stays_literal(targets: KapeTargets) -> None:
    result = import_kape([TARGETS / "Windows" / "EventLogs-RDP.tkape"], targets)
    assert result.not_converted == []
    paths = [a.path for a in result.profile.artifacts]
    name = "Microsoft-Windows-TerminalServices-RDPClient%%4Operational.evtx"
    assert f"%SystemDrive%\\Windows\\System32\\winevt\\Logs\\{name}" in paths


def test_kape_masks_and_paths() -> None:
    assert convert_mask("regex:.*\\.(jpg|mp4|pdf|webp)") == ["*.jpg", "*.mp4", "*.pdf", "*.webp"]
    assert convert_mask("regex:*.+\\.(db*|sqlite*|)") == ["*.db*", "*.sqlite*"]
    from profiles.convert import Unconvertible

    with pytest.raises(Unconvertible, match="has no wildcard equivalent"):
        convert_mask("Regex:*.\\b[a-zA-Z0-9_-]{8}\\b.compiled")
    with pytest.raises(Unconvertible, match="needs raw volume access"):
        convert_mask("$UsnJrnl:$J")


def test_kape_compound_cycle_and_missing_reference(tmp_path: Path) -> None:
    (tmp_path / "A.tkape").write_text(
        "Targets:\n  - {Name: b, Category: x, Path: B.tkape}\n  - {Name: gone, Category: x, Path: Gone.tkape}\n"
    )
    (tmp_path / "B.tkape").write_text(
        "Targets:\n  - {Name: a, Category: x, Path: A.tkape}\n  - {Name: f, Category: x, Path: 'C:\\Temp', FileMask: '*.log', Recursive: true}\n"
    )
    result = import_kape([tmp_path / "A.tkape"], KapeTargets(tmp_path))
    assert [(n.origin, n.reason, n.category) for n in result.not_converted] == [
        ("B.tkape: a", "compound target cycle A.tkape -> B.tkape -> A.tkape", "reference"),
        (
            "A.tkape: gone",
            "compound target names Gone.tkape, which is not in the Targets library",
            "reference",
        ),
    ]
    assert [a.to_dict() for a in result.profile.artifacts] == [
        {
            "name": "B: f",
            "category": "x",
            "kind": "file",
            "path": "%SystemDrive%\\Temp\\**\\*.log",
            "max_depth": 16,
        }
    ]


def test_fa_windows_system_registry_files(definitions: ForensicArtifacts) -> None:
    result = import_forensic_artifacts(["WindowsSystemRegistryFiles"], definitions)
    assert result.not_converted == []
    assert [(a.kind, a.path) for a in result.profile.artifacts] == [
        ("file", "%SystemDrive%\\System Volume Information\\Syscache.hve"),
        ("file", "%SystemRoot%\\System32\\config\\SAM"),
        ("file", "%SystemRoot%\\System32\\config\\SECURITY"),
        ("file", "%SystemRoot%\\System32\\config\\SOFTWARE"),
        ("file", "%SystemRoot%\\System32\\config\\SYSTEM"),
    ]


def test_fa_windows_persistence_registry_keys(definitions: ForensicArtifacts) -> None:
    result = import_forensic_artifacts(["WindowsPersistenceRegistryKeys"], definitions)
    assert result.not_converted == []
    assert len(result.converted) == 67
    keys = [a for a in result.profile.artifacts if isinstance(a, RegistryArtifact)]
    assert len(keys) == len(result.profile.artifacts) == 177
    run = [a for a in keys if a.key == "HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"]
    assert [(a.recursive, a.values) for a in run] == [(True, ())]
    user_run = [
        a
        for a in keys
        if a.key == "HKU\\%UserSid%\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
    ]
    assert len(user_run) == 1
    winlogon = [
        a
        for a in keys
        if a.key == "HKLM\\Software\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon"
        and "Shell" in a.values
    ]
    assert winlogon


def test_fa_paths() -> None:
    assert convert_path("%%users.localappdata%%\\Google\\Chrome\\User Data\\*\\IndexedDB\\**5") == (
        "%LocalAppData%\\Google\\Chrome\\User Data\\*\\IndexedDB\\**",
        5,
    )
    assert convert_path("%%environ_systemroot%%\\System32\\winevt\\Logs\\**") == (
        "%SystemRoot%\\System32\\winevt\\Logs\\**",
        3,
    )
    assert convert_path("\\$Recycle.Bin\\*\\$I*") == ("%SystemDrive%\\$Recycle.Bin\\*\\$I*", None)
    assert expand_braces("a\\{x,y}\\{1,2}.txt") == [
        "a\\x\\1.txt",
        "a\\x\\2.txt",
        "a\\y\\1.txt",
        "a\\y\\2.txt",
    ]


def test_fa_other_os_and_wmi_say_why(definitions: ForensicArtifacts) -> None:
    result = import_forensic_artifacts(
        ["WMIProcessList", "LinuxPasswdFile", "NTFSMFTFiles"], definitions
    )
    assert [(n.origin, n.category) for n in result.not_converted] == [
        ("wmi.yaml: WMIProcessList: WMI", "wmi"),
        ("linux.yaml: LinuxPasswdFile: FILE", "other-os"),
        ("file_systems.yaml: NTFSMFTFiles: FILE", "raw-ntfs"),
    ]
    assert (
        result.not_converted[0].reason
        == "WMI query (SELECT * from Win32_Process): Live Response has no WMI command"
    )
    assert result.profile.artifacts == ()


def test_whole_libraries_convert_or_say_why(definitions: ForensicArtifacts) -> None:
    kape = survey_kape(TARGETS)
    print("\nKAPE targets:\n" + "\n".join(kape.lines()))
    assert (kape.units, kape.converted, kape.partial, kape.not_converted) == (377, 362, 5, 10)
    assert (kape.entries_converted, kape.entries_not_converted) == (2388, 28)
    assert dict(kape.reasons) == {"raw-ntfs": 24, "regex": 4}
    fa = survey_forensic_artifacts(definitions)
    print("ForensicArtifacts definitions:\n" + "\n".join(fa.lines()))
    assert (fa.units, fa.converted, fa.partial, fa.not_converted, fa.other_os) == (
        731,
        353,
        0,
        32,
        346,
    )
    assert set(fa.reasons) == {"other-os", "wmi", "raw-ntfs", "reference"}
    windows = ForensicArtifacts()
    windows.definitions = {n: definitions.definitions[n] for n in windows_definitions(definitions)}
    survey = survey_forensic_artifacts(windows)
    print("ForensicArtifacts Windows definitions:\n" + "\n".join(survey.lines()))
    assert (survey.units, survey.converted, survey.not_converted) == (388, 353, 32)
    unexplained = [
        r for r in survey.reasons if r not in ("other-os", "wmi", "raw-ntfs", "reference")
    ]
    assert unexplained == []


def test_cli_import_writes_a_valid_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fa.yaml"
    code = main(
        [
            "profiles",
            "import",
            str(DEFINITIONS / "windows.yaml"),
            "--only",
            "WindowsSystemRegistryFiles",
            "--name",
            "fa-hives",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    profile = load_profile_file(out)
    assert profile.name == "fa-hives"
    assert len(profile.artifacts) == 5
    err = capsys.readouterr().err
    assert err == "converted 1, not converted 0, 5 artifacts\n"
    assert main(["profiles", "check", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}: ok, profile fa-hives, 5 artifacts\n"


def test_cli_import_kape_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "import", str(TARGETS / "Windows" / "Prefetch.tkape")]) == 0
    captured = capsys.readouterr()
    assert captured.out.endswith(
        "name: kape-Prefetch\ndescription: Prefetch files\nartifacts:\n"
        "- name: 'Prefetch: Prefetch'\n  category: Prefetch\n  kind: file\n"
        "  path: '%SystemDrive%\\Windows\\prefetch\\*.pf'\n"
        "- name: 'Prefetch: Prefetch #2'\n  category: Prefetch\n  kind: file\n"
        "  path: '%SystemDrive%\\Windows.old\\Windows\\prefetch\\*.pf'\n"
    )
    assert main(["profiles", "import", str(TARGETS / "Windows" / "$MFT.tkape")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "converted 0, not converted 1, 0 artifacts",
        "not converted: Windows/$MFT.tkape: $MFT: NTFS metadata $MFT needs raw volume access; "
        "Live Response reads files through the Windows file API, which cannot open it",
        "cblr-collect profiles: nothing converted",
    ]


def test_cli_import_reads_only_the_files_given(tmp_path: Path) -> None:
    given = tmp_path / "windows.yaml"
    shutil.copy(DEFINITIONS / "windows.yaml", given)
    (tmp_path / "broken.yaml").write_text("garbage: [\n", encoding="utf-8")
    out = tmp_path / "out.yaml"
    imported = profiles_cli(tmp_path, "import", given, "--only", "WindowsRunKeys", "--out", out)
    assert imported.returncode == 0, imported.stderr
    assert "broken.yaml" not in imported.stderr
    assert load_profile_file(out).artifacts


def test_cli_import_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "fa.yaml"
    out.write_text("keep me\n", encoding="utf-8")
    args = ["import", DEFINITIONS / "windows.yaml", "--only", "WindowsRunKeys", "--out", out]
    refused = profiles_cli(tmp_path, *args)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == f"cblr-collect profiles: {out} exists; give --force to overwrite it\n"
    assert out.read_text(encoding="utf-8") == "keep me\n"
    forced = profiles_cli(tmp_path, *args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert load_profile_file(out).artifacts


def test_cli_import_says_a_native_profile_needs_no_import(tmp_path: Path) -> None:
    native = tmp_path / "minimal.yaml"
    native.write_text("name: mine\nartifacts: [{name: p, kind: processes}]\n", encoding="utf-8")
    result = profiles_cli(tmp_path, "import", native)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"cblr-collect profiles: {native}: already a cblr-collector profile, nothing to import: "
        f"use it as it is (collect --profile {native}), or check it with "
        "'cblr-collect profiles check'\n"
    )


def profiles_cli(home: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``cblr-collect profiles ARGS`` through the installed console script."""
    return run_cli("profiles", *args, env=clean_env(home), cwd=home)


@pytest.mark.parametrize(
    ("out", "reason"),
    [("afile/x.yaml", "Not a directory"), ("folder", "Is a directory")],
    ids=["under-a-file", "a-folder"],
)
def test_cli_import_into_an_unwritable_out_is_one_line(
    tmp_path: Path, out: str, reason: str
) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    args = ["import", DEFINITIONS / "windows.yaml", "--only", "WindowsRunKeys", "--out", out]
    result = profiles_cli(tmp_path, *args, "--force")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == (
        f"cblr-collect profiles: --out {out}: cannot write it ({reason})"
    )
    assert "Traceback" not in result.stderr
