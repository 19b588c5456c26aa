"""Evidence correctness through the installed CLI, as an examiner meets it (issue 18).

Raw hives through a shadow copy (``reg save`` only when shadow copies fail), the source's own
times in the manifest, in the archive's zip entries and on the unsealed files, counts that add
up everywhere (planned = collected + failed + not present), the copy log, the bodyfile and the
run log sealed with the evidence, and no plaintext left in the workspace once the archive
verifies. Expectations come from the emulator's scenario, never from the collector's code.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cli_harness import (
    PASSPHRASE,
    PASSWORD_VAR,
    TOKEN,
    Emulator,
    clean_env,
    device,
    emulator_process,
    json_lines,
    run_cli,
    write_scenario,
)

from emulator.content import iter_blocks
from emulator.endpoint import build_endpoint
from emulator.scenario import load_scenario
from emulator.vfs import Node
from evidence import archive as archive_format
from evidence import envelope
from evidence.filetimes import read_ntfs_extra

WITH_VSS = 51001
WITHOUT_VSS = 51002
FLAKY = 51003
CASE = "IR-FORENSICS-18"
USER_SID = "S-1-5-21-900-901-902-1001"
SYSTEM_HIVE = "C:\\Windows\\System32\\config\\SYSTEM"
NTUSER = "C:\\Users\\alice\\NTUSER.DAT"
REPORT = "C:\\data\\report.docx"
REPORT_TIMES = {
    "created": "2025-03-04T05:06:07Z",
    "modified": "2026-10-30T21:14:09Z",
    "accessed": "2026-11-02T07:45:00Z",
}
RUN_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
PROFILE = f"""\
name: forensics-e2e
description: hives, a file, a pattern that matches nothing, a present and an absent key
artifacts:
  - {{name: SYSTEM hive, category: registry, kind: hive, hive: SYSTEM}}
  - {{name: NTUSER.DAT, category: registry, kind: hive, hive: NTUSER}}
  - {{name: data files, category: user-files, kind: file, path: 'C:\\data\\*'}}
  - {{name: old logs, category: logs, kind: file, path: 'C:\\nowhere\\*.evtx'}}
  - {{name: Run keys (machine), category: persistence, kind: registry, key: '{RUN_KEY}'}}
  - name: Vendor persistence
    category: persistence
    kind: registry
    key: 'HKLM\\SOFTWARE\\NoSuchVendor\\Persist'
"""
PLANNED = 6
"""Two hives, the file, the Run key (its .reg export counted with it), the absent key, and
the pattern that matched nothing."""


def host(device_id: int, *, shadow_copies: bool = True) -> dict[str, Any]:
    doc = device(
        device_id,
        [{"path": REPORT, "text": "quarterly figures\n", **REPORT_TIMES}],
    )
    doc["users"] = [{"name": "alice", "sid": USER_SID, "logged_on": True}]
    doc["registry"] = {RUN_KEY: {"Updater": {"type": "REG_SZ", "data": "C:\\upd.exe"}}}
    doc["shadow_copies"] = shadow_copies
    return doc


@dataclass
class Run:
    out: Path
    result: Any
    events: list[dict[str, Any]]
    workspace: Path

    @property
    def summary(self) -> dict[str, Any]:
        return self.events[-1]

    @property
    def archive(self) -> Path:
        (archive,) = sorted(self.out.glob("*.zip"))
        return archive


@dataclass
class Lab:
    home: Path
    scenario: Path
    profile: Path
    emulator: Emulator

    def env(self, **extra: str) -> dict[str, str]:
        settings = {"CBLR_URL": self.emulator.url, "CBLR_TOKEN": TOKEN, PASSWORD_VAR: PASSPHRASE}
        return clean_env(self.home, **{**settings, **extra})

    def collect(self, device_id: int, name: str, *extra: str) -> Run:
        out = self.home / name
        result = run_cli(
            "collect",
            "--device",
            str(device_id),
            "--profile",
            self.profile,
            "--case",
            CASE,
            "--examiner",
            "Forensic Examiner",
            "--out",
            out,
            "--password-env",
            PASSWORD_VAR,
            "--json",
            *extra,
            env=self.env(),
            cwd=self.home,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr
        return Run(
            out, result, json_lines(result.stdout), out / "workspaces" / f"device-{device_id}"
        )

    def node(self, device_id: int, path: str) -> Node:
        """The file as the scenario builds it, before any run touched it."""
        spec = load_scenario(self.scenario).device(device_id)
        return build_endpoint(spec).fs.lookup(path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("forensics")
    scenario = write_scenario(
        home / "scenario.yaml",
        [host(WITH_VSS), host(WITHOUT_VSS, shadow_copies=False), host(FLAKY)],
    )
    profile = home / "forensics.yaml"
    profile.write_text(PROFILE, encoding="utf-8")
    with emulator_process(scenario, home) as emulator:
        yield Lab(home, scenario, profile, emulator)


@pytest.fixture(scope="module")
def shadow_run(lab: Lab) -> Run:
    return lab.collect(WITH_VSS, "shadow")


@pytest.fixture(scope="module")
def unsealed(lab: Lab, shadow_run: Run) -> Path:
    target = lab.home / "unsealed"
    result = run_cli(
        "unseal",
        shadow_run.archive,
        "--out",
        target,
        "--password-env",
        PASSWORD_VAR,
        env=lab.env(),
        cwd=lab.home,
    )
    assert result.returncode in (0, 4), result.stdout + result.stderr
    return target


def manifest_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_bytes())


def by_source(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["source"]: a for a in manifest["artifacts"] if not a["derived_from"]}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scenario_times(node: Node) -> dict[str, str]:
    return {
        "create_time": iso(node.created),
        "last_write_time": iso(node.modified),
        "last_access_time": iso(node.accessed),
    }


def raw_bytes(node: Node) -> bytes:
    assert node.content is not None
    return b"".join(iter_blocks(node.content))


# ---- counts


def test_json_counts_add_up_and_each_artifact_is_done_exactly_once(shadow_run: Run) -> None:
    events = shadow_run.events
    (plan,) = [e for e in events if e["event"] == "plan_ready"]
    assert plan["artifacts"] == PLANNED
    done = [e for e in events if e["event"] == "artifact_done"]
    ids = [e["artifact_id"] for e in done]
    assert len(ids) == len(set(ids)) == PLANNED - 1  # the unmatched pattern has no artifact
    assert Counter(e["status"] for e in done) == {"collected": 4, "not_present": 1}
    methods = {e["source"]: e["acquisition_method"] for e in done}
    assert methods[SYSTEM_HIVE] == methods[NTUSER] == "shadow_copy"
    assert methods[REPORT] == "get_file"
    (entry,) = shadow_run.summary["devices"]
    assert (entry["planned"], entry["collected"], entry["failed"], entry["not_present"]) == (
        PLANNED,
        4,
        0,
        2,
    )
    totals = shadow_run.summary["totals"]
    assert totals["artifacts_planned"] == PLANNED
    assert totals["artifacts_not_present"] == 2
    assert (entry["retries"], entry["session_reopens"], entry["faults"]) == (0, 0, 0)


def test_the_summary_says_the_counts_add_up_and_what_stays_on_disk(lab: Lab) -> None:
    out = lab.home / "table"
    result = run_cli(
        *("collect", "--device", str(WITH_VSS), "--profile", lab.profile, "--case", CASE),
        *("--examiner", "Forensic Examiner", "--out", out, "--password-env", PASSWORD_VAR),
        env=lab.env(),
        cwd=lab.home,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    row = next(line.split() for line in lines if line.startswith(f"  {WITH_VSS} "))
    assert row[2:6] == ["collected", "4", "0", "2"]  # status, collected, failed, absent
    mine = [line for line in lines if line.startswith(f"device {WITH_VSS}: ")]
    assert mine[-2:] == [
        f"device {WITH_VSS}: {PLANNED} planned: 4 collected, 0 failed, 2 not present",
        f"device {WITH_VSS}: staged copy removed; the journal and run log stay",
    ]  # no trouble met: no "survived" line


def test_verify_says_the_same_counts(lab: Lab, shadow_run: Run) -> None:
    result = run_cli(
        "verify",
        shadow_run.archive,
        "--password-env",
        PASSWORD_VAR,
        "--json",
        env=lab.env(),
        cwd=lab.home,
    )
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["plan accounted for"] == {
        "name": "plan accounted for",
        "ok": True,
        "detail": f"{PLANNED} planned: 4 collected, 0 failed, 2 not present",
    }
    summary = report["summary"]
    assert (summary["planned"], summary["collected"], summary["failed"]) == (PLANNED, 4, 0)
    assert (summary["not_present"], summary["unmatched_patterns"]) == (2, 1)


def test_the_manifest_counts_the_reg_export_with_its_key(unsealed: Path) -> None:
    manifest = manifest_of(unsealed)
    records = manifest["artifacts"]
    (export,) = [r for r in records if r["kind"] == "registry.reg"]
    run_key = by_source(manifest)[RUN_KEY]
    assert export["derived_from"] == run_key["artifact_id"]
    assert export["artifact_id"] not in {p["artifact_id"] for p in manifest["plan"]}
    absent = by_source(manifest)["HKLM\\SOFTWARE\\NoSuchVendor\\Persist"]
    assert (absent["status"], absent["outcome"]) == ("collected", "not_present")
    summary = manifest["summary"]
    assert summary["planned"] == summary["collected"] + summary["failed"] + summary["not_present"]


# ---- raw hives and source times


def test_hives_are_the_raw_files_with_their_own_times(lab: Lab, unsealed: Path) -> None:
    records = by_source(manifest_of(unsealed))
    for path in (SYSTEM_HIVE, NTUSER):
        node = lab.node(WITH_VSS, path)
        record = records[path]
        staged = (unsealed / record["staged_path"]).read_bytes()
        assert staged == raw_bytes(node)
        assert b"Deleted-" in staged  # the slack a raw copy keeps and reg save drops
        assert record["acquisition_method"] == "shadow_copy"
        assert record["remote_times"] == scenario_times(node)
        copy = record["temporary_copy_times"]["last_write_time"]
        assert copy > record["remote_times"]["last_write_time"]
        observed = record["source_observations"]
        assert observed["before"]["last_write_time"] == observed["after"]["last_write_time"]
        assert record["changed_during_acquisition"] is False
    report = records[REPORT]
    assert report["remote_times"] == {
        "create_time": REPORT_TIMES["created"],
        "last_write_time": REPORT_TIMES["modified"],
        "last_access_time": REPORT_TIMES["accessed"],
    }
    assert (report["acquisition_method"], report["temporary_copy_times"]) == ("get_file", {})


def test_without_shadow_copies_a_hive_is_saved_with_reg_save_and_keeps_its_times(
    lab: Lab,
) -> None:
    run = lab.collect(WITHOUT_VSS, "no-vss", "--keep-workspace")
    target = lab.home / "no-vss-unsealed"
    result = run_cli(
        *("unseal", run.archive, "--out", target, "--password-env", PASSWORD_VAR),
        env=lab.env(),
        cwd=lab.home,
    )
    assert result.returncode in (0, 4), result.stdout + result.stderr
    records = by_source(manifest_of(target))
    node = lab.node(WITHOUT_VSS, SYSTEM_HIVE)
    record = records[SYSTEM_HIVE]
    staged = (target / record["staged_path"]).read_bytes()
    assert record["acquisition_method"] == "reg_save"
    assert staged[:4] == b"regf" and staged != raw_bytes(node)
    assert b"Deleted-" not in staged
    assert record["remote_times"] == scenario_times(node)
    # --keep-workspace: the staged copy stays beside the journal.
    assert sorted(p.name for p in (run.workspace / "staging").iterdir())
    assert (run.workspace / "collection" / "manifest.json").is_file()


# ---- times survive unsealing; the zip entries carry them


def test_unsealed_files_carry_the_source_times(lab: Lab, shadow_run: Run, tmp_path: Path) -> None:
    # A folder of its own: reading a file (as other tests do) moves its access time.
    target = tmp_path / "unsealed"
    result = run_cli(
        *("unseal", shadow_run.archive, "--out", target, "--password-env", PASSWORD_VAR),
        env=lab.env(),
        cwd=lab.home,
    )
    assert result.returncode in (0, 4), result.stdout + result.stderr
    records = by_source(manifest_of(target))
    for path in (SYSTEM_HIVE, NTUSER, REPORT):
        times = records[path]["remote_times"]
        stat = (target / records[path]["staged_path"]).stat()
        assert iso(stat.st_mtime) == times["last_write_time"], path
        assert iso(stat.st_atime) == times["last_access_time"], path


def test_zip_entries_carry_the_source_time_with_an_ntfs_extra_field(
    lab: Lab, shadow_run: Run, tmp_path: Path
) -> None:
    password = envelope.open_envelope(
        archive_format.read_envelope(shadow_run.archive), passphrase=PASSPHRASE.encode()
    )
    inner = tmp_path / "inner.zip"
    archive_format.decrypt_payload(shadow_run.archive, password, inner)
    node = lab.node(WITH_VSS, SYSTEM_HIVE)
    with zipfile.ZipFile(inner) as payload:
        manifest = json.loads(payload.read("manifest.json"))
        info = payload.getinfo(by_source(manifest)[SYSTEM_HIVE]["staged_path"])
    written = datetime.fromtimestamp(node.modified, UTC)
    assert info.date_time == (
        written.year,
        written.month,
        written.day,
        written.hour,
        written.minute,
        written.second - written.second % 2,
    )
    times = read_ntfs_extra(info.extra)
    assert times is not None
    assert times.modified == written
    assert times.accessed == datetime.fromtimestamp(node.accessed, UTC)
    assert times.created == datetime.fromtimestamp(node.created, UTC)


# ---- the copy log, the bodyfile and the run log are sealed with the evidence


def test_the_copy_log_lists_every_record_with_hashes_times_method_and_status(
    unsealed: Path,
) -> None:
    manifest = manifest_of(unsealed)
    rows = list(csv.DictReader(io.StringIO((unsealed / "copy-log.csv").read_text("utf-8"))))
    assert len(rows) == len(manifest["artifacts"])
    hive = next(r for r in rows if r["remote_path"] == SYSTEM_HIVE)
    record = by_source(manifest)[SYSTEM_HIVE]
    assert hive == {
        "path": record["staged_path"],
        "remote_path": SYSTEM_HIVE,
        "size": str(record["size"]),
        "md5": record["hashes"]["md5"],
        "sha1": record["hashes"]["sha1"],
        "sha256": record["hashes"]["sha256"],
        "modified": record["remote_times"]["last_write_time"],
        "accessed": record["remote_times"]["last_access_time"],
        "changed": "",
        "born": record["remote_times"]["create_time"],
        "method": "shadow_copy",
        "status": "collected",
        "reason": "",
        "artifact_id": record["artifact_id"],
        "name": "SYSTEM hive",
        "finished": record["finished"],
    }
    statuses = Counter(r["status"] for r in rows)
    assert statuses == {"collected": 5, "not_present": 1}  # the .reg export is a row too


def test_the_bodyfile_drops_into_a_timeline(lab: Lab, unsealed: Path) -> None:
    lines = (unsealed / "timeline.bodyfile").read_text("utf-8").splitlines()
    fields = {line.split("|")[1]: line.split("|") for line in lines}
    assert sorted(fields) == sorted([SYSTEM_HIVE, NTUSER, REPORT])
    node = lab.node(WITH_VSS, SYSTEM_HIVE)
    md5, _, inode, mode, uid, gid, size, atime, mtime, ctime, crtime = fields[SYSTEM_HIVE]
    record = by_source(manifest_of(unsealed))[SYSTEM_HIVE]
    assert (md5, inode, mode, uid, gid) == (record["hashes"]["md5"], "0", "r/rrwxrwxrwx", "0", "0")
    assert int(size) == record["size"]
    assert (int(atime), int(mtime), ctime, int(crtime)) == (
        int(node.accessed),
        int(node.modified),
        "0",
        int(node.created),
    )


def test_the_run_log_is_sealed_without_secrets(unsealed: Path) -> None:
    log = (unsealed / "run.log").read_text("utf-8")
    assert "collector" in log
    assert TOKEN not in log and PASSPHRASE not in log
    for half in TOKEN.split("/"):
        assert half not in log


# ---- no plaintext left behind


def test_the_workspace_keeps_only_the_journal_and_the_log(shadow_run: Run) -> None:
    workspace = shadow_run.workspace
    left = sorted(str(p.relative_to(workspace)) for p in workspace.rglob("*") if p.name != ".lock")
    assert left == ["journal.sqlite", "logs", "logs/run.log"]
    (sealed,) = [e for e in shadow_run.events if e["event"] == "sealed"]
    assert sealed["plaintext_removed"] is True
    (entry,) = shadow_run.summary["devices"]
    assert entry["plaintext_removed"] is True


def test_an_archive_sealed_for_a_recipient_also_leaves_no_plaintext(lab: Lab) -> None:
    """The collector cannot open it; the sidecar's signed hash of the archive is the proof."""
    keys = run_cli("keygen", "--out", lab.home / "lab" / "lab", env=lab.env(), cwd=lab.home)
    assert keys.returncode == 0, keys.stderr
    out = lab.home / "for-recipient"
    result = run_cli(
        *("collect", "--device", str(WITH_VSS), "--profile", lab.profile, "--case", CASE),
        *("--examiner", "E", "--out", out, "--json"),
        *("--recipient", lab.home / "lab" / "lab.recipient.pub"),
        env=lab.env(),
        cwd=lab.home,
    )
    assert result.returncode == 0, result.stderr
    (entry,) = json_lines(result.stdout)[-1]["devices"]
    assert entry["plaintext_removed"] is True
    workspace = out / "workspaces" / f"device-{WITH_VSS}"
    assert not (workspace / "staging").exists()
    assert not (workspace / "collection").exists()
    assert (workspace / "journal.sqlite").is_file()


def test_sealing_again_after_the_plaintext_went_says_why_it_cannot(
    lab: Lab, shadow_run: Run
) -> None:
    result = run_cli(
        *("seal", shadow_run.workspace, "--password-env", PASSWORD_VAR),
        env=lab.env(),
        cwd=lab.home,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"cblr-collect seal: {shadow_run.workspace}: the staged copy was removed after "
        f"{shadow_run.archive.name} was sealed and verified; collect with --keep-workspace to "
        "be able to seal again"
    ]


# ---- what the run survived


def test_retries_the_run_survived_are_counted_in_the_summary_and_the_manifest(
    lab: Lab, tmp_path: Path
) -> None:
    flaky_home = tmp_path / "flaky"
    flaky_home.mkdir()
    with emulator_process(
        lab.scenario, flaky_home, "--faults", "http503=0.15", "--fault-seed", "18"
    ) as flaky:
        env = clean_env(
            flaky_home, CBLR_URL=flaky.url, CBLR_TOKEN=TOKEN, **{PASSWORD_VAR: PASSPHRASE}
        )
        out = flaky_home / "out"
        result = run_cli(
            *("collect", "--device", str(FLAKY), "--profile", lab.profile, "--case", CASE),
            *("--examiner", "E", "--out", out, "--password-env", PASSWORD_VAR, "--json"),
            env=env,
            cwd=flaky_home,
        )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    (entry,) = json_lines(result.stdout)[-1]["devices"]
    assert entry["retries"] > 0
    target = flaky_home / "unsealed"
    unsealed = run_cli(
        *("unseal", entry["archive"], "--out", target, "--password-env", PASSWORD_VAR),
        env=env,
        cwd=flaky_home,
    )
    assert unsealed.returncode in (0, 4), unsealed.stdout + unsealed.stderr
    summary = manifest_of(target)["summary"]
    assert (summary["retries"], summary["session_reopens"], summary["faults"]) == (
        entry["retries"],
        entry["session_reopens"],
        entry["faults"],
    )
    # Each counted retry is a line of the sealed run log (which also holds the retries of the
    # server check made before the device's collection began).
    log = (target / "run.log").read_text("utf-8")
    assert 0 < entry["retries"] <= log.count("retrying in") + log.count("trying again")


# ---- documented exit codes


@pytest.mark.parametrize("command", ["collect", "resume"])
def test_help_documents_every_exit_code(command: str, tmp_path: Path) -> None:
    result = run_cli(command, "--help", env=clean_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0
    codes = result.stdout.split("exit codes:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in codes if line.strip()] == [
        "0",
        "1",
        "2",
        "3",
        "130",
        "141",
        "143",
    ]
    assert "130  interrupted (Ctrl-C); resumable with: cblr-collect resume WORKSPACE" in (
        result.stdout
    )


SEVEN_ZIP = shutil.which("7z") or shutil.which("7zz") or shutil.which("7za")


@pytest.mark.skipif(SEVEN_ZIP is None, reason="7-Zip (apt package 7zip) is not installed")
def test_7zip_shows_the_source_times_of_each_entry(
    lab: Lab, shadow_run: Run, tmp_path: Path
) -> None:
    assert SEVEN_ZIP is not None
    subprocess.run(
        [SEVEN_ZIP, "x", f"-p{PASSPHRASE}", f"-o{tmp_path}", str(shadow_run.archive)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    listing = subprocess.run(
        [SEVEN_ZIP, "l", "-slt", str(tmp_path / "evidence.zip")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    entries = {
        block.split("\n", 1)[0]: dict(
            line.split(" = ", 1) for line in block.splitlines() if " = " in line
        )
        for block in listing.split("Path = ")[1:]
    }
    node = lab.node(WITH_VSS, SYSTEM_HIVE)
    entry = entries["artifacts/C/Windows/System32/config/SYSTEM"]

    def shown(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.0000000")

    assert (entry["Modified"], entry["Accessed"], entry["Created"]) == (
        shown(node.modified),
        shown(node.accessed),
        shown(node.created),
    )
    report = entries["artifacts/C/data/report.docx"]
    assert report["Modified"] == "2026-10-30 21:14:09.0000000"
