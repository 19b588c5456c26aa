"""The pieces behind issue 18's evidence correctness, one behaviour each: zip entry times, the
copy log and bodyfile against hostile names, the outcome tally, and the source-change check."""

from __future__ import annotations

import csv
import importlib
import inspect
import io
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from collector.acquisition.resilience import RECOVERIES
from collector.packaging.folder import source_changed, source_times
from collector.transfer.journal import Artifact, ArtifactState
from emulator.hive import build_hive, deleted_key_remnant
from emulator.registry import RegKey, to_hive_tree
from evidence.copylog import render_bodyfile, render_copy_log
from evidence.filetimes import EntryTimes, apply_source_times, read_ntfs_extra
from evidence.hashes import Digests
from evidence.manifest import document_files
from evidence.outcomes import summary_problems, tally
from evidence.records import ArtifactRecord

TIMES = {
    "create_time": "2024-02-29T23:59:59Z",
    "last_write_time": "2026-10-29T08:00:01Z",
    "last_access_time": "2026-10-29T08:30:00Z",
}


def record(**changes: object) -> ArtifactRecord:
    base: dict[str, object] = {
        "artifact_id": "1",
        "name": "hive",
        "kind": "file",
        "source": "C:\\x\\a.bin",
        "method": "get file, chunked",
        "status": "collected",
        "size": 3,
        "remote_times": dict(TIMES),
        "digests": Digests(md5="m" * 32, sha1="s" * 40, sha256="h" * 64),
        "staged_path": "artifacts/C/x/a.bin",
        "acquisition_method": "get_file",
        "outcome": "collected",
    }
    base.update(changes)
    return ArtifactRecord(**base)  # type: ignore[arg-type]


def test_a_zip_entry_keeps_the_source_times_to_the_100_nanoseconds(tmp_path: Path) -> None:
    times = EntryTimes(
        datetime(2026, 10, 29, 8, 0, 1, 123456, tzinfo=UTC),
        datetime(2026, 10, 29, 8, 30, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
    )
    info = zipfile.ZipInfo("a.bin", date_time=times.date_time())
    info.extra = times.ntfs_extra()
    with zipfile.ZipFile(tmp_path / "t.zip", "w", allowZip64=True) as archive:
        archive.writestr(info, b"abc")
    with zipfile.ZipFile(tmp_path / "t.zip") as archive:
        (read,) = archive.infolist()
    assert read.date_time == (2026, 10, 29, 8, 0, 0)  # DOS: two-second steps
    assert read_ntfs_extra(read.extra) == times


def test_dos_dates_are_clamped_to_what_dos_can_say() -> None:
    early = EntryTimes(datetime(1601, 1, 1, tzinfo=UTC))
    late = EntryTimes(datetime(2200, 1, 1, tzinfo=UTC))
    assert early.date_time() == (1980, 1, 1, 0, 0, 0)
    assert late.date_time() == (2107, 12, 31, 23, 59, 58)
    assert read_ntfs_extra(early.ntfs_extra()) == EntryTimes(
        early.modified, early.modified, early.modified
    )


def test_times_come_only_with_a_last_write_time() -> None:
    assert EntryTimes.from_remote_times({}) is None
    assert EntryTimes.from_remote_times({"last_write_time": "not a time"}) is None
    assert EntryTimes.from_remote_times({"last_write_time": "2026-10-29T08:00:01"}) is None


def test_unsealed_files_get_modification_and_access_times(tmp_path: Path) -> None:
    target = tmp_path / "artifacts" / "C" / "x" / "a.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"abc")
    outside = tmp_path / "outside"
    outside.write_bytes(b"x")
    (tmp_path / "artifacts" / "link").symlink_to(outside)
    before = outside.stat().st_mtime_ns
    manifest = {
        "artifacts": [
            record().as_dict(),
            record(artifact_id="2", staged_path="artifacts/link").as_dict(),
            record(artifact_id="3", status="failed", staged_path="").as_dict(),
        ]
    }
    assert apply_source_times(tmp_path, manifest) == 1
    stat = os.stat(target)
    assert stat.st_mtime_ns == 1_793_260_801 * 10**9
    assert stat.st_atime_ns == 1_793_262_600 * 10**9
    assert outside.stat().st_mtime_ns == before


def test_the_copy_log_defuses_formulas_and_keeps_names_whole() -> None:
    hostile = 'C:\\x\\=HYPERLINK("http://evil")|a\nb.txt'
    text = render_copy_log([record(source=hostile, name="@SUM(A1)")]).decode()
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["remote_path"] == hostile  # starts with C:, nothing to defuse
    assert row["name"] == "'@SUM(A1)"
    (row,) = csv.DictReader(io.StringIO(render_copy_log([record(source="=1+2")]).decode()))
    assert row["remote_path"] == "'=1+2"


def test_the_bodyfile_keeps_one_line_per_file_whatever_the_name() -> None:
    hostile = "C:\\x\\a|b\nc%d.txt"
    lines = render_bodyfile([record(source=hostile), record(status="failed")]).decode()
    (line,) = lines.splitlines()
    fields = line.split("|")
    assert len(fields) == 11
    assert fields[1] == "C:\\x\\a%7Cb%0Ac%25d.txt"
    assert fields[7:] == ["1793262600", "1793260801", "0", "1709251199"]


def test_the_tally_counts_derived_documents_with_their_artifact() -> None:
    counted = tally(
        [
            ("collected", False, False, 10),
            ("collected", False, True, 5),  # the .reg export
            ("collected", True, False, 2),  # an absent key's record
            ("failed", False, False, 0),
        ],
        [
            ("plan.no_match", {"patterns": ["a", "b"]}),
            ("collection.resilience", {"retries": 3, "session_reopens": 1, "faults": 2}),
            ("collection.resilience", {"retries": 1, "session_reopens": 0, "faults": 0}),
        ],
    )
    assert (counted.planned, counted.collected, counted.failed, counted.not_present) == (
        5,
        1,
        1,
        3,
    )
    assert (counted.bytes, counted.retries, counted.session_reopens, counted.faults) == (
        17,
        4,
        1,
        2,
    )


def test_verify_names_a_summary_that_does_not_add_up() -> None:
    records = [record().as_dict(), record(artifact_id="2", derived_from="1").as_dict()]
    honest = {
        "planned": 2,
        "collected": 1,
        "failed": 0,
        "not_present": 1,
        "unmatched_patterns": 1,
        "bytes": 6,
    }
    assert summary_problems({"artifacts": records, "summary": honest}) == []
    inflated = {**honest, "collected": 2, "planned": 3}
    assert summary_problems({"artifacts": records, "summary": inflated}) == [
        "summary says 3 planned, the records 2",
        "summary says 2 collected, the records 1",
    ]


def _artifact(
    details: dict[str, object], method: str = "esentutl /vss shadow copy, then get file"
) -> Artifact:
    return Artifact(
        id=1,
        kind="hive",
        device_id="1",
        source="C:\\Windows\\System32\\config\\SYSTEM",
        state=ArtifactState.COLLECTED,
        planned_utc="2026-12-04T14:59:00Z",
        updated_utc="2026-12-04T15:00:01Z",
        method=method,
        remote_times={"last_write_time": "2026-12-04T15:00:00Z"},
        details=details,
    )


def test_a_copied_file_keeps_its_sources_times_and_a_change_is_seen() -> None:
    before = {"exists": True, "size": 8192, **TIMES}
    same = _artifact({"source_observations": {"before": before, "after": dict(before)}})
    assert source_times(same) == TIMES
    assert not source_changed(same)
    rewritten = {**before, "last_write_time": "2026-10-29T08:00:09Z"}
    moved = _artifact({"source_observations": {"before": before, "after": rewritten}})
    assert source_changed(moved)
    direct = _artifact({}, method="get file, chunked")
    assert source_times(direct) == {"last_write_time": "2026-12-04T15:00:00Z"}


def test_a_raw_hive_holds_the_deleted_key_a_saved_one_does_not() -> None:
    when = datetime(2026, 11, 1, tzinfo=UTC)
    key = RegKey("SYSTEM", when.timestamp())
    saved = build_hive(to_hive_tree(key), file_name="SYSTEM", when=when)
    raw = build_hive(
        to_hive_tree(key),
        file_name="SYSTEM",
        when=when,
        slack=(deleted_key_remnant("Persistence", when),),
    )
    assert saved[:4] == raw[:4] == b"regf"
    assert b"Persistence" in raw and b"Persistence" not in saved
    position = raw.index(b"nk", raw.index(b"Persistence") - 80)
    assert int.from_bytes(raw[position - 4 : position], "little", signed=True) > 0  # free cell


def test_every_counted_recovery_is_a_message_its_module_still_logs() -> None:
    """The counts read log records by (logger, template): a reworded message would silently
    count nothing, so each template must still be in its module's source."""
    for (logger, template), kind in RECOVERIES.items():
        module = importlib.import_module(logger)
        assert f'"{template}"' in inspect.getsource(module), (logger, template, kind)
    assert set(RECOVERIES.values()) == {"retries", "session_reopens", "faults"}


def test_a_collection_must_hold_the_documents_its_manifest_records() -> None:
    required = ["custody.jsonl", "case.jsonld", "SHA256SUMS", "SHA1SUMS", "MD5SUMS"]
    assert list(document_files({"documents": {}})) == required  # sealed before the copy log
    assert list(document_files({"documents": "copy-log.csv"})) == required
    recorded = {"documents": {"copy-log.csv": "0" * 64, "run.log": "1" * 64}}
    assert list(document_files(recorded)) == [*required, "copy-log.csv", "run.log"]
