"""The workspace journal: schema, states, chunks, events, settings, and safe staging paths."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from collector.transfer.journal import (
    ArtifactState,
    Collected,
    Journal,
    JournalError,
    utc_now,
)
from collector.transfer.staging import (
    StagingPathError,
    create_staging_file,
    finish_staging_file,
    resolve_staging,
    staging_relpath,
)

DIGESTS = {"md5": "0" * 32, "sha1": "1" * 40, "sha256": "2" * 64}


def test_the_journal_is_wal_with_full_sync_and_reopens(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "ws") as journal:
        journal.add_artifact("file", 37191, "C:\\a.txt")
        mode = journal._db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = journal._db.execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)
    with Journal.open(tmp_path / "ws") as journal:
        (artifact,) = journal.artifacts()
    assert (artifact.id, artifact.device_id, artifact.source) == (1, "37191", "C:\\a.txt")
    assert artifact.state is ArtifactState.PLANNED


def test_an_artifact_goes_planned_running_collected_with_its_events(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        artifact = journal.add_artifact(
            "file", 1, "C:\\x", member_name="files/x", details={"profile": "triage"}
        )
        running = journal.start_artifact(
            artifact.id,
            method="get file, chunked",
            size=10,
            remote_times={"last_write_time": "2026-11-01T08:00:00Z"},
            staging_path="staging/00000001.bin",
            observations={"before": {"size": 10}},
            chunks=[(0, 6), (6, 4)],
            details={"chunk_size": 6},
        )
        assert running.state is ArtifactState.RUNNING
        assert running.details == {"profile": "triage", "chunk_size": 6}
        assert [(c.offset, c.length, c.is_done) for c in journal.chunks(1)] == [
            (0, 6, False),
            (6, 4, False),
        ]
        journal.mark_chunk_done(1, 1, 4, "a" * 64)
        assert journal.count_done_chunks(1) == 1
        journal.reset_chunk(1, 1, "torn")
        assert journal.chunk(1, 1).sha256 is None
        done = journal.mark_collected(
            1,
            Collected(
                size=10,
                **DIGESTS,
                changed_during_acquisition=True,
                observations={"before": {"size": 10}, "after": {"size": 11}},
                reason="the file changed during acquisition",
            ),
        )
        events = journal.events(artifact_id=1)
    assert done.state is ArtifactState.COLLECTED
    assert done.changed_during_acquisition is True
    assert (done.md5, done.sha1, done.sha256) == tuple(DIGESTS.values())
    assert done.observations == {"before": {"size": 10}, "after": {"size": 11}}
    assert done.member_name == "files/x"
    assert [e.kind for e in events] == [
        "artifact.planned",
        "artifact.started",
        "chunk.done",
        "chunk.reset",
        "artifact.collected",
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e.utc) for e in events)
    assert events[2].payload == {"index": 1, "received": 4, "sha256": "a" * 64}


def test_state_changes_out_of_order_are_refused(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        artifact = journal.add_artifact("registry", 1, "HKLM\\SOFTWARE")
        with pytest.raises(JournalError):
            journal.mark_collected(artifact.id, Collected(size=0, **DIGESTS))
        failed = journal.mark_failed(artifact.id, "access denied", result_code=0x80070005)
        assert failed.result_code == 0x80070005
        with pytest.raises(JournalError):
            journal.mark_failed(artifact.id, "again")
        with pytest.raises(JournalError):
            journal.start_artifact(artifact.id, method="x")
        with pytest.raises(JournalError):
            journal.artifact(99)
        with pytest.raises(JournalError):
            journal.mark_chunk_done(artifact.id, 0, 0, "")
        assert journal.events()[-1].payload == {
            "reason": "access denied",
            "result_code": "0x80070005",
        }


def test_artifacts_of_any_kind_are_filtered_by_state_kind_and_device(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        journal.add_artifact("file", 1, "C:\\a")
        journal.add_artifact("memdump", 1, "memory", details={"compress": False})
        journal.add_artifact("file", 2, "C:\\b")
        journal.mark_failed(3, "offline")
        assert [a.id for a in journal.artifacts(kind="file")] == [1, 3]
        assert [a.id for a in journal.artifacts(device_id=1)] == [1, 2]
        assert [a.id for a in journal.artifacts(states=[ArtifactState.FAILED])] == [3]
        assert journal.artifact(2).details == {"compress": False}


def test_settings_are_kept_and_secrets_refused(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        journal.set_settings({"case": "IR-1", "out": "/evidence", "chunk_size": 8388608})
        journal.set_settings({"case": "IR-2"})
        for secret in ("api_token", "password_env_value", "private_key"):
            with pytest.raises(JournalError, match="secret"):
                journal.set_settings({secret: "x"})
        assert journal.settings() == {"case": "IR-2", "chunk_size": 8388608, "out": "/evidence"}


def test_a_reader_in_read_only_mode_sees_commits_and_cannot_write(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as writer, Journal.open(tmp_path, readonly=True) as reader:
        writer.add_artifact("file", 1, "C:\\a")
        assert [a.id for a in reader.artifacts()] == [1]
        with pytest.raises(sqlite3.OperationalError):
            reader.add_artifact("file", 1, "C:\\b")


def test_utc_now_is_iso_8601_with_z() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now())


# ---- staging paths


def test_staging_paths_come_from_the_artifact_id_only(tmp_path: Path) -> None:
    assert staging_relpath(42) == "staging/00000042.bin"
    assert resolve_staging(tmp_path, "staging/00000042.bin") == (
        tmp_path.resolve() / "staging" / "00000042.bin"
    )
    with pytest.raises(StagingPathError):
        staging_relpath(-1)


@pytest.mark.parametrize(
    "hostile",
    [
        "../escape.bin",
        "staging/../../escape.bin",
        "/etc/passwd",
        "staging/..",
        "staging\\..\\..\\x",
        "C:\\Windows\\x",
        "",
        "staging/.hidden",
        "staging//x",
    ],
)
def test_staging_paths_that_leave_the_workspace_are_refused(tmp_path: Path, hostile: str) -> None:
    if hostile == "staging//x":
        assert resolve_staging(tmp_path, hostile) == tmp_path.resolve() / "staging" / "x"
        return
    with pytest.raises(StagingPathError):
        resolve_staging(tmp_path, hostile)


def test_a_symlinked_staging_folder_or_file_is_refused(tmp_path: Path) -> None:
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    workspace.mkdir()
    outside.mkdir()
    (workspace / "staging").symlink_to(outside)
    with pytest.raises(StagingPathError):
        resolve_staging(workspace, "staging/00000001.bin")
    (workspace / "staging").unlink()
    (workspace / "staging").mkdir()
    (workspace / "staging" / "00000001.bin").symlink_to(outside / "target")
    with pytest.raises(StagingPathError):
        resolve_staging(workspace, "staging/00000001.bin")


def test_a_staging_file_is_sparse_sized_kept_on_reopen_and_cut_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "staging" / "00000001.bin"
    create_staging_file(path, 10_000)
    assert path.stat().st_size == 10_000
    assert oct(path.stat().st_mode & 0o777) == oct(0o600 & ~_umask())
    with open(path, "r+b") as handle:
        handle.write(b"kept")
    create_staging_file(path, 20_000)
    assert path.stat().st_size == 10_000
    assert path.read_bytes()[:4] == b"kept"
    finish_staging_file(path, 4)
    assert path.read_bytes() == b"kept"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_a_batch_commits_once_and_a_failed_batch_leaves_nothing(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        with journal.batch():
            for index in range(3):
                journal.add_artifact("file", 1, f"C:\\batched-{index}")
            other = sqlite3.connect(journal.path)
            assert other.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0] == 0
            other.close()
        with pytest.raises(RuntimeError), journal.batch():
            journal.add_artifact("file", 1, "C:\\lost")
            raise RuntimeError("interrupted while recording the plan")
        journal.add_artifact("file", 1, "C:\\after")
        sources = [a.source for a in journal.artifacts()]
    assert sources == ["C:\\batched-0", "C:\\batched-1", "C:\\batched-2", "C:\\after"]
